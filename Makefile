# r1deploy developer and operator entry points. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
R1 := $(VENV)/bin/r1deploy
PYTEST_ARGS ?=

.PHONY: help bootstrap demo test lint unit lab-up lab-down lab-status bench clean

help:
	@echo "make demo      deploy the whole stack to the built-in lab 'lab'; ends with how to sign in"
	@echo "make test      every test tier (static, unit, lab end-to-end), as CI runs it, on its own lab"
	@echo "               'lab-test' (never touches the demo's lab: the two run in either order)"
	@echo "make lint      static checks only (ruff, yamllint, ansible-lint, syntax-check)"
	@echo "make unit      unit tests only (no lab)"
	@echo "make lab-up / lab-down / lab-status   (the demo's lab; lab-down frees its memory)"
	@echo "make bench     benchmarks on a deployed lab: load (vLLM, nginx), model fan-out, CLI overhead"

bootstrap:
	@bash scripts/bootstrap.sh

# `r1deploy deploy` ends with the sign-in block (chat URL, admin email, where the password is, API and key,
# next commands); `r1deploy status -i inventories/lab` prints it again.
demo: bootstrap
	$(R1) lab up
	$(R1) deploy -i inventories/lab

# The lab tier brings up, deploys and removes its own lab (tests/lab/conftest.py: `lab-test`).
test: bootstrap
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/pytest tests/static $(PYTEST_ARGS)

unit: bootstrap
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

lab-up: bootstrap
	$(R1) lab up

lab-down: bootstrap
	$(R1) lab down

lab-status: bootstrap
	$(R1) lab status

# Benchmarks against a deployed lab (`make demo` first); they report, never assert.
bench: bootstrap
	$(R1) bench --inventory inventories/lab
	$(R1) bench --inventory inventories/lab --via nginx
	bash scripts/bench_model_fanout.sh inventories/lab
	$(PY) scripts/bench_wrapper_overhead.py -i inventories/lab

clean: lab-down
	rm -rf $(VENV) .cache
