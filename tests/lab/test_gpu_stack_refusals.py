"""Bad GPU-stack input stops playbooks/gpu_stack.yml in preflight, naming host, variable and fix.

Runs the real playbook against this machine (Debian 12) with a local connection in --check mode and a
recorded V100 GPU fact: nothing is changed even if a refusal were missing, and the reboot guard refuses
local connections anyway. No containers needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
V100 = {
    "source": "lspci",
    "count": 8,
    "devices": [{"index": i, "name": "GV100GL [Tesla V100 SXM2 32GB]"} for i in range(8)],
    "driver": {"version": "", "flavour": "none"},
    "nvswitch": False,
}


def run_check(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    gpu_nodes:\n      children:\n        ray_head:\n          hosts:\n"
        "            gpu-local:\n              ansible_connection: local\n"
        f"              ansible_python_interpreter: {sys.executable}\n"
        "              r1deploy_node_ip: 127.0.0.1\n"
    )
    extra_file = tmp_path / "extra.json"
    extra_file.write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(inventory), "--check", "--diff", "-e", f"@{extra_file}",
            "-e", "ansible_become=false", str(REPO / "playbooks" / "gpu_stack.yml"),
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"r1deploy_gpus": V100, "nvidia_driver_flavour": "open", "nvidia_driver_source": "nvidia"},
            "gpu-local: nvidia_driver_flavour is 'open' but this host has compute capability 7.0 GPUs",
        ),
        (
            {"r1deploy_gpus": V100, "nvidia_driver_source": "distro", "nvidia_driver_branch": "580"},
            "gpu-local: Debian 12's non-free archive carries driver branch 535 only, not 580: "
            "set nvidia_driver_branch: '535'",
        ),
        (
            {"r1deploy_gpus": V100, "nvidia_driver_source": "nvidia", "nvidia_driver_branch": "595"},
            "gpu-local: nvidia_driver_branch is '595' but R580 is the last branch",
        ),
        (
            {
                "r1deploy_gpus": {**V100, "driver": {"version": "580.173.02", "flavour": "open"}},
                "nvidia_driver_source": "nvidia",
            },
            "the open kernel module, which ignores compute capability 7.0 GPUs. "
            "Set nvidia_driver_force_install: true",
        ),
    ],
    ids=["open-on-volta", "debian-archive-has-535-only", "branch-past-580-on-volta", "open-module-loaded"],
)
def test_driver_refusals(tmp_path: Path, extra: dict, message: str) -> None:
    result = run_check(tmp_path, extra)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, out[-3000:]
    assert message in out, out[-3000:]
    assert "Refuse what cannot work, before changing anything" in out
    # It stopped in preflight: no install task of any role ran.
    assert "Install the tools the role runs" not in out


def test_cuda_13_refused_on_volta(tmp_path: Path) -> None:
    extra = {
        "r1deploy_gpus": {**V100, "driver": {"version": "535.261.03", "flavour": "proprietary"}},
        "nvidia_driver_source": "distro",
        "nvidia_driver_branch": "535",
        "cuda_toolkit_enabled": True,
        "cuda_toolkit_version": "13.0",
    }
    out = " ".join((lambda r: r.stdout + r.stderr)(run_check(tmp_path, extra)).split())
    assert (
        "gpu-local: cuda_toolkit_version selects CUDA 13, which cannot target compute capability 7.0" in out
    )


def test_missing_gpu_fact_says_run_preflight(tmp_path: Path) -> None:
    if Path("/etc/ansible/facts.d/r1deploy_gpus.fact").exists():
        pytest.skip("this machine has a cached GPU fact")
    result = run_check(tmp_path, {})
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert (
        "gpu-local: the GPU fact r1deploy_gpus is missing or has no 'count': "
        "run playbooks/preflight.yml first" in out
    )
