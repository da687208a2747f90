"""Settings reach the running services: a changed file restarts exactly the units that read it, in order.

The test changes an NCCL variable and a vLLM flag in the lab's inventory (a group_vars file it
writes and removes), re-runs playbooks/serving.yml as an operator would and reads the environment
(/proc/PID/environ) and command line of the running processes. Destructive: it restarts the serving
units; it restores the original settings and leaves the lab serving.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.deployed import LAB_VENV
from tests.lab.helpers import PlaybookRun, on_host, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

SETTINGS = "zz_restart_test.yml"
# The serving roles and the NCCL environment: what an operator re-runs after a settings change.
TAGS = ("--tags", "nccl,ray_head,ray_head_wait,ray_worker,vllm_server")
RAY_PROCESS = {"ray_head": r"^\S*/gcs_server ", "ray_workers": r"^\S*/raylet "}


def _units(lab) -> dict[str, tuple[str, str]]:
    head = next(iter(lab.groups["ray_head"]))
    worker = next(iter(lab.groups["ray_workers"]))
    frontend = next(iter(lab.groups["frontend"]))
    return {
        "head": (head, "ray-head.service"),
        "worker": (worker, "ray-worker.service"),
        "vllm": (head, "vllm.service"),
        "webui": (frontend, "open-webui.service"),
    }


def _started(lab) -> dict[str, int]:
    """Each unit's main-process start (systemd's monotonic microseconds; one clock for the lab)."""
    out: dict[str, int] = {}
    for name, (host, unit) in _units(lab).items():
        value = on_host(
            lab.inventory, host, f"systemctl show {unit} -p ExecMainStartTimestampMonotonic --value"
        )
        out[name] = int(value.strip())
    return out


def _process(lab, host: str, pattern: str) -> tuple[dict[str, str], list[str]]:
    """(environment, argv) of the oldest process whose command line matches the regex ``pattern``."""
    out = on_host(
        lab.inventory,
        host,
        f"pid=$(pgrep -o -f {shlex.quote(pattern)}); tr '\\0' '\\n' < /proc/$pid/environ;"
        " echo ---argv---; tr '\\0' '\\n' < /proc/$pid/cmdline",
    )
    environ, _, argv = out.partition("---argv---\n")
    env = dict(line.split("=", 1) for line in environ.splitlines() if "=" in line)
    return env, argv.splitlines()


def _vllm(lab) -> tuple[dict[str, str], list[str]]:
    head = next(iter(lab.groups["ray_head"]))
    # The server itself, not its supervisor (whose command line carries the server's after `--`).
    return _process(lab, head, f"^{LAB_VENV}/bin/python -m vllm.entrypoints.openai.api_server")


def _serving_run(lab, settings: dict | None) -> PlaybookRun:
    path = Path(lab.inventory) / "group_vars" / "all" / SETTINGS
    if settings is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text("---\n" + json.dumps(settings, indent=2) + "\n")
    run = run_playbook(lab.inventory, "playbooks/serving.yml", *TAGS)
    assert run.rc == 0, run.output[-8000:]
    return run


@pytest.fixture
def restored(deployed_lab) -> Iterator[None]:
    yield
    path = Path(deployed_lab.inventory) / "group_vars" / "all" / SETTINGS
    if path.exists():
        _serving_run(deployed_lab, None)


@pytest.mark.destructive(order=10)
def test_a_changed_setting_restarts_exactly_what_reads_it_in_order(deployed_lab, restored) -> None:
    lab = deployed_lab
    head = next(iter(lab.groups["ray_head"]))
    worker = next(iter(lab.groups["ray_workers"]))
    env, argv = _vllm(lab)
    assert "NCCL_DEBUG" not in env, "the lab runs without NCCL_DEBUG; the test sets it"
    original_seqs = argv[argv.index("--max-num-seqs") + 1]
    before = _started(lab)

    # 1. An NCCL variable and a vLLM flag: every unit that reads nccl.env restarts, head first, then
    #    the worker, then vLLM (which also gets the flag); Open WebUI reads neither and keeps running.
    changed = {"nccl_debug": "WARN", "vllm_server_max_num_seqs": 12}
    run = _serving_run(lab, changed)
    lab.record("restart_on_nccl_and_vllm_change_seconds", run.seconds)
    after = _started(lab)
    assert after["webui"] == before["webui"], "Open WebUI reads none of these files: it must not restart"
    assert before["head"] < after["head"] < after["worker"] < after["vllm"], (before, after)
    for host, group in ((head, "ray_head"), (worker, "ray_workers")):
        ray_env, _ = _process(lab, host, RAY_PROCESS[group])
        assert ray_env.get("NCCL_DEBUG") == "WARN", f"{host}: {RAY_PROCESS[group]} runs without the change"
    env, argv = _vllm(lab)
    assert env.get("NCCL_DEBUG") == "WARN"
    assert argv[argv.index("--max-num-seqs") + 1] == "12"

    # 2. A second run with the same settings changes and restarts nothing.
    again = _serving_run(lab, changed)
    assert again.total("changed") == 0, again.changed_tasks()
    assert _started(lab) == after

    # 3. Back to the inventory's settings: the original values run again, and the API serves.
    _serving_run(lab, None)
    env, argv = _vllm(lab)
    assert "NCCL_DEBUG" not in env
    assert argv[argv.index("--max-num-seqs") + 1] == original_seqs
    ready = on_host(
        lab.inventory,
        head,
        f"python3 /opt/r1deploy/bin/r1deploy-vllm-ready --url {lab.vllm_url} --model r1-tiny"
        " --key-file /etc/r1deploy/vllm-secrets.env --timeout 120",
    )
    assert json.loads(ready.splitlines()[-1])["ok"]
