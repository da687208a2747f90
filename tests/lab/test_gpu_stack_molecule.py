"""The gpu_stack Molecule scenario (molecule/gpu_stack) under pytest, since CI runs only pytest.

`molecule test -s gpu_stack`: create, prepare, --check, converge (the `install` path), idempotence
(changed=0); then side_effect (the driver reboot played with named stubs, and drift: holds released,
nouveau blacklist, branch pin and NVIDIA's source deleted), converge again (the `present` path: the
right driver is loaded), idempotence, testinfra verify; destroy. On the lab's systemd image
with real Debian packages from the lab's apt mirror.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1deploy.lab.paths import state_dir

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "molecule" / "gpu_stack"
ARTIFACTS = REPO / "test-artifacts"

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


def _sections(text: str, action: str) -> list[str]:
    """The log of each run of ``action``, in order."""
    starts = [m.end() for m in re.finditer(ACTION.format(action=action, state="Executing"), text)]
    ends = [m.start() for m in re.finditer(ACTION.format(action=action, state="Executed"), text)]
    return [text[a:b] for a, b in zip(starts, ends, strict=False)]


def _task_changed(section: str, task: str, host: str) -> bool:
    """Whether the task (or handler) whose title contains ``task`` reported ``changed`` on ``host``."""
    blocks = re.split(r"\n(?=(?:TASK|RUNNING HANDLER) \[)", section)
    hits = [
        b for b in blocks if b.startswith(("TASK [", "RUNNING HANDLER [")) and task in b.split("\n", 1)[0]
    ]
    assert hits, f"no task {task!r} in this converge"
    return any(re.search(rf"^changed: \[{re.escape(host)}\]", b, re.M) for b in hits)


def _step_seconds(text: str) -> list[tuple[str, int]]:
    """Each action's playbook time, from the timer callback ("Playbook run took 0 days, 0 hours, ...")."""
    steps = []
    marks = re.finditer(ACTION.format(action=r"(\w+)", state="Executing"), text)
    for m in marks:
        rest = text[m.end() :]
        took = re.search(r"Playbook run took (\d+) days, (\d+) hours, (\d+) minutes, (\d+) seconds", rest)
        nxt = re.search(ACTION.format(action=r"\w+", state="Executing"), rest)
        if took and (nxt is None or took.start() < nxt.start()):
            d, h, mi, se = (int(x) for x in took.groups())
            steps.append((m.group(1), ((d * 24 + h) * 60 + mi) * 60 + se))
    return steps


def _report(total_s: float, steps: list[tuple[str, int]]) -> None:
    """Reported, never asserted: the scenario's wall time and each step's playbook time."""
    lines = [f"molecule test -s gpu_stack: {total_s:.0f} s"] + [f"  {a:<12} {s:>5} s" for a, s in steps]
    print("\n".join(lines))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "gpu-stack-molecule.json").write_text(
        json.dumps({"total_s": round(total_s), "steps": steps}, indent=2) + "\n"
    )


def test_gpu_stack_scenario(molecule_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "molecule.log"
    env = dict(molecule_env, PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", COLUMNS="400")
    env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.timer"  # each step's time, for the report
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "molecule"), "test", "-s", "gpu_stack"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=3600,
            check=False,
        )
    total_s = time.monotonic() - started
    text = _plain(log.read_text())
    _report(total_s, _step_seconds(text))
    assert result.returncode == 0, text[-15000:]
    for action, runs in (
        ("check", 1),
        ("converge", 2),
        ("idempotence", 2),
        ("side_effect", 1),
        ("verify", 1),
    ):
        done = re.findall(ACTION.format(action=action, state="Executed: Successful"), text)
        assert len(done) == runs, (action, len(done))
    summaries = re.findall(r"=+ (\d+) passed, (\d+) skipped", text)
    assert len(summaries) == 1 and int(summaries[0][0]) >= 15, "testinfra ran fewer tests than it has"
    install, present = _sections(text, "converge")

    # --- the `install` path (no driver loaded) ---
    # The CPU-only host skipped each GPU role with one message naming the fact.
    assert install.count("cpu-only: CPU-only host (r1deploy_gpus.count is 0): NVIDIA driver, CUDA") == 1
    assert install.count("cpu-only: CPU-only host (r1deploy_gpus.count is 0): no CUDA toolkit") == 1
    assert install.count("cpu-only: CPU-only host (r1deploy_gpus.count is 0): no libnccl") == 1
    # The driver hosts asked for a reboot instead of rebooting (containers; nvidia_driver_reboot: false).
    assert (
        "gpu-v100: reboot pending for the NVIDIA driver (driver packages changed, nouveau blacklisted)"
        in install
    )
    assert _task_changed(
        install, "nvidia_driver : Rebuild the initramfs for the nouveau blacklist", "gpu-v100"
    )

    # --- the `present` path after the (simulated) reboot, with drift to repair ---
    assert re.search(
        r"gpu-v100: present: driver 535\.[\d.]+ \(proprietary kernel module\) is loaded", present
    )
    assert "gpu-t4: present: driver 580.95.05 (open kernel module) is loaded" in present
    # nothing is installed on that path; what drifted is put back, by the driver role
    for host in ("gpu-v100", "gpu-t4"):
        assert not _task_changed(present, "nvidia_driver : Install the driver packages (apt)", host)
        assert _task_changed(present, "nvidia_driver : Hold the driver packages", host)
    assert _task_changed(present, "nvidia_driver : Blacklist nouveau", "gpu-v100")
    assert _task_changed(
        present, "nvidia_driver : Rebuild the initramfs for the nouveau blacklist", "gpu-v100"
    )
    assert _task_changed(present, "nvidia_driver : Pin the driver branch", "gpu-v100")
    assert _task_changed(present, "nvidia_driver : Add NVIDIA's CUDA repository (apt)", "gpu-t4")
    assert _task_changed(present, "cuda_toolkit : Put the CUDA toolkit on PATH", "gpu-t4")
    # the reboot play verified the loaded driver (the stubs) against the plan
    assert re.search(r"gpu-v100: driver 535\.[\d.]+ \(proprietary kernel module\) drives 2 GPU\(s\)", present)
    assert "gpu-t4: driver 580.95.05 (open kernel module) drives 1 GPU(s)" in present
    assert "reboot pending" not in present
