"""The gpu_stack Molecule scenario (molecule/gpu_stack) under pytest, since CI runs only pytest.

`molecule test -s gpu_stack`: create, prepare, --check, converge, idempotence (changed=0), testinfra
verify, destroy, on the lab's systemd image with real Debian packages from the lab's apt mirror.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy.lab.paths import state_dir

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "molecule" / "gpu_stack"

pytestmark = pytest.mark.lab


def _lab_env():
    spec = importlib.util.spec_from_file_location("gpu_stack_lab_env", SCENARIO / "lab_env.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def molecule_env():
    lab_env = _lab_env()
    # The scenario's container and network names are fixed: one run at a time on this machine
    # (another checkout's run would destroy this one's hosts).
    lock_path = state_dir() / "molecule-gpu.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = dict(os.environ)
        env.update(lab_env.up())
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        try:
            yield env
        finally:
            lab_env.down()


# "gpu_stack ➜ converge: Executed: Successful" or, without a terminal, "[gpu_stack > converge] Executed: ..."
ACTION = r"gpu_stack\s*(?:➜|>)\s*{action}\]?:?\s*{state}"


def _plain(text: str) -> str:
    """Molecule's log without colours and with its wrapped lines joined again."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return re.sub(r"\n\s*│\s{0,3}", " ", text)


def test_gpu_stack_scenario(molecule_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "molecule.log"
    env = dict(molecule_env, PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", COLUMNS="400")
    with log.open("w") as out:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "molecule"), "test", "-s", "gpu_stack"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=2400,
            check=False,
        )
    text = _plain(log.read_text())
    assert result.returncode == 0, text[-15000:]
    for action in ("check", "converge", "idempotence", "verify"):
        assert re.search(ACTION.format(action=action, state="Executed: Successful"), text), action
    summary = re.findall(r"=+ (\d+) passed, (\d+) skipped", text)
    assert summary and int(summary[-1][0]) >= 15, "testinfra ran fewer tests than the scenario has"
    # The CPU-only host skipped each GPU role with one message naming the fact (converge run).
    start = re.search(ACTION.format(action="converge", state="Executing"), text)
    end = re.search(ACTION.format(action="converge", state="Executed"), text)
    assert start and end
    converge = text[start.end() : end.start()]
    assert converge.count("cpu-only: CPU-only host (r1deploy_gpus.count is 0): NVIDIA driver, CUDA") == 1
    assert converge.count("cpu-only: CPU-only host (r1deploy_gpus.count is 0): no CUDA toolkit") == 1
    assert converge.count("cpu-only: CPU-only host (r1deploy_gpus.count is 0): no libnccl") == 1
    # The driver hosts asked for a reboot instead of rebooting (containers; nvidia_driver_reboot: false).
    assert (
        "gpu-v100: reboot pending for the NVIDIA driver (driver packages changed, nouveau blacklisted)"
        in converge
    )
