"""The lab tier's shared lab: brought up once per pytest session, torn down at its end.

It is brought up the way the README tells a new user to (``r1deploy lab up``, then ``r1deploy deploy``
in tests/lab/deployed.py), under its own name: ``make demo``'s lab is ``lab``, the tests' is
``lab-test``, so ``make test`` and ``make demo`` run in either order on one machine and neither touches
the other's lab (tests/unit/test_lab_cli.py checks the two defaults differ).

Environment:
  R1DEPLOY_LAB_NAME   which lab (default ``lab-test``); use your own name when others run labs here too.
  R1DEPLOY_LAB_REUSE  ``1``: use the lab of that name if it is already up (and leave it up afterwards).
                      Without it, a lab that is already up is an error rather than silently reused
                      or destroyed (it may be someone's demo).
  R1DEPLOY_KEEP_LAB   ``1``: keep the lab this session made, for debugging.
  R1DEPLOY_LAB_WORKERS  number of ray_workers hosts (default 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from r1deploy.lab import Lab, LabInfo
from tests.lab.deployed import (
    LAB_SHARED_SETTINGS,
    deployed_lab,  # noqa: F401  the whole stack, deployed once per session
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The lab tier's default lab name: never `make demo`'s (r1deploy.lab.paths.DEFAULT_NAME).
TEST_LAB_NAME = "lab-test"
ARTIFACTS = REPO / "test-artifacts"
DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"


def _log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def session_lab_name() -> str:
    return os.environ.get("R1DEPLOY_LAB_NAME") or TEST_LAB_NAME


@pytest.fixture(scope="session")
def lab() -> Iterator[LabInfo]:
    name = session_lab_name()
    workers = int(os.environ.get("R1DEPLOY_LAB_WORKERS", "1"))
    reuse = os.environ.get("R1DEPLOY_LAB_REUSE") == "1"
    keep = os.environ.get("R1DEPLOY_KEEP_LAB") == "1"
    handle = Lab(name, workers=workers, root=REPO, log=_log)
    existed = handle.status() is not None
    if existed and not reuse:
        pytest.fail(
            f"lab {name!r} is already up: set R1DEPLOY_LAB_REUSE=1 to test against it, "
            f"R1DEPLOY_LAB_NAME=lab-<you> for a separate one, or run `r1deploy lab down --name {name}`",
            pytrace=False,
        )
    try:
        # The README's first step, as a user types it (idempotent: on a reused lab it only refreshes
        # keys, mirrors and the inventory). Progress goes to the terminal; the table to an artifact.
        up = subprocess.run(
            [str(BIN / "r1deploy"), "lab", "up", "--name", name, "--workers", str(workers)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            timeout=1800,
            check=False,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "lab-up.txt").write_text(up.stdout)
        if up.returncode != 0:
            pytest.fail(
                f"`r1deploy lab up --name {name}` exited {up.returncode}:\n{up.stdout}", pytrace=False
            )
        info = handle.status()
        assert info is not None and info.hosts, f"lab {name} is not up after `r1deploy lab up`"
        # Non-default shared settings for every test of this lab (tests/lab/deployed.py says why).
        (Path(info.inventory_dir) / "group_vars" / "all" / "shared_settings.yml").write_text(
            "---\n# Written by tests/lab/conftest.py: shared settings (roles/r1deploy), not their defaults.\n"
            + "".join(f"{k}: {v}\n" for k, v in LAB_SHARED_SETTINGS.items())
        )
        yield info
    finally:
        if keep or (reuse and existed):
            _log(f"leaving lab {name} up (R1DEPLOY_KEEP_LAB / R1DEPLOY_LAB_REUSE)")
        else:
            _log(f"tearing down lab {name}: {', '.join(handle.down()) or 'nothing left'}")


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def lab_ansible(lab: LabInfo) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ad-hoc ``ansible PATTERN ARGS...`` against the lab's inventory (over SSH, as operators do)."""

    def run(pattern: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "ansible"), pattern, "-i", str(lab.inventory_dir), *args]
        return subprocess.run(
            argv, cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


@pytest.fixture(scope="session")
def lab_exec(lab: LabInfo) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``docker exec`` into a lab host, for checks that must not depend on SSH working."""

    def run(
        host: str, *cmd: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [DOCKER, "exec", host, *cmd], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {cmd} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    return run
