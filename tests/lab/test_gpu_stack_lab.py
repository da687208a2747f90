"""The GPU stack plays on the deployed lab (CPU-only GPU-group hosts): the all-reduce health check over
gloo across the Ray head and workers, and gpu_stack.yml in --check --diff with nothing left to change.
"""

from __future__ import annotations

import re

import pytest

from tests.lab.helpers import on_host, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.deployed]


def test_nccl_check_all_reduce_across_the_lab(deployed_lab) -> None:
    run = run_playbook(deployed_lab.inventory, "playbooks/nccl_check.yml", timeout=900)
    out = run.output
    assert run.rc == 0, out[-8000:]
    # one gloo process on each GPU-group host, all in one all-reduce
    nodes = len(deployed_lab.groups["ray_head"]) + len(deployed_lab.groups.get("ray_workers", {}))
    assert f"Run the all-reduce on every host at once, processes {nodes}" in out
    # bus bandwidth per size, then the verdict against the gloo floor
    assert re.search(r"1 MiB\s+[\d.]+\s+[\d.]+\s+[\d.]+", out), out[-4000:]
    assert re.search(r"4 MiB\s+[\d.]+\s+[\d.]+\s+[\d.]+", out), out[-4000:]
    assert re.search(r"PASS: gloo \(CPU\): bus bandwidth [\d.]+ GB/s at 4 MiB >= floor", out), out[-4000:]
    assert run.total("changed") == 0


def test_nccl_check_fails_clearly_when_a_floor_is_not_met(deployed_lab) -> None:
    run = run_playbook(
        deployed_lab.inventory,
        "playbooks/nccl_check.yml",
        "-e",
        '{"nccl_check_floors_gbps": {"gloo": 100000}}',
        timeout=900,
    )
    assert run.rc != 0
    assert re.search(r"gloo \(CPU\): bus bandwidth [\d.]+ GB/s at 4 MiB < floor 100000.00 GB/s", run.output)


def test_gpu_stack_check_mode_changes_nothing_on_the_deployed_lab(deployed_lab) -> None:
    run = run_playbook(deployed_lab.inventory, "playbooks/gpu_stack.yml", "--check", "--diff", timeout=900)
    assert run.rc == 0, run.output[-8000:]
    assert run.total("changed") == 0, run.changed_tasks()
    assert "CPU-only host (r1deploy_gpus.count is 0): NVIDIA driver, CUDA toolkit and libnccl" in run.output


def test_lab_hosts_share_one_nccl_environment(deployed_lab) -> None:
    hosts = [*deployed_lab.groups["ray_head"], *deployed_lab.groups.get("ray_workers", {})]
    envs = {h: on_host(deployed_lab.inventory, h, "cat /etc/r1deploy/nccl.env") for h in hosts}
    sockets = {re.search(r"^NCCL_SOCKET_IFNAME=(.*)$", e, re.M).group(1) for e in envs.values()}
    assert len(sockets) == 1 and next(iter(sockets)).startswith("=")  # identical on every host
    for env in envs.values():
        assert re.search(r"^GLOO_SOCKET_IFNAME=\S+$", env, re.M)
        assert not re.search(r"^NCCL_DEBUG=", env, re.M)
