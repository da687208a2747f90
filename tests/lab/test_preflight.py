"""Preflight (playbooks/preflight.yml: stage 1 + stage 2) against the 3-host lab over SSH.

The lab is a CPU-only site: the GPU fact must say source none / count 0, preflight must pass, change
nothing on a second run, write nothing with --check, and refuse real host problems by name.
Uses the session's `lab` fixture (tests/lab/conftest.py; R1DEPLOY_LAB_NAME=lab-preflight for a lab
of one's own). Preflight only reads, so it also runs against a lab that is already deployed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from r1deploy.lab import Lab
from r1deploy.lab.lab import fact_cache_files
from tests.lab.conftest import DOCKER, session_lab_name
from tests.lab.helpers import BIN, REPO, ansible_env, inventory_groups, run_playbook

pytestmark = [pytest.mark.lab]
FACT = "/etc/ansible/facts.d/r1deploy_gpus.fact"


@pytest.fixture(scope="module")
def lab_inventory(lab) -> Path:
    return Path(lab.inventory_dir)


@pytest.fixture(scope="module")
def first_run(lab_inventory: Path):
    run = run_playbook(lab_inventory, "playbooks/preflight.yml")
    print(f"\npreflight wall time on the 3-host lab (first run): {run.seconds} s")
    return run


def test_preflight_passes_on_the_lab(first_run) -> None:
    assert first_run.rc == 0, first_run.output[-6000:]
    assert first_run.total("failed") == 0 and first_run.total("unreachable") == 0
    assert (
        "Every host passed preflight" in first_run.output
        and "Inventory, variables and plan are valid" in first_run.output
    )
    assert "--distributed-executor-backend mp" in first_run.output  # the CPU plan


def test_gpu_fact_is_cached_and_read_back_as_a_local_fact(
    first_run, lab_inventory: Path, lab_exec, lab_ansible
) -> None:
    groups = inventory_groups(lab_inventory)
    for host in groups["gpu_nodes"]:
        fact = json.loads(lab_exec(host, "cat", FACT).stdout)
        assert fact == {
            "source": "none",
            "count": 0,
            "devices": [],
            "driver": {"version": "", "flavour": "none"},
            "nvswitch": False,
        }
        # Ansible reads it back as ansible_local.r1deploy_gpus (what the GPU-stack roles use).
        setup = lab_ansible(host, "-b", "-m", "ansible.builtin.setup", "-a", "filter=ansible_local")
        assert setup.returncode == 0 and '"source": "none"' in setup.stdout, setup.stdout
    for host in groups["frontend"]:
        assert lab_exec(host, "test", "-e", FACT, check=False).returncode == 1


def test_second_run_changes_nothing(first_run, lab_inventory: Path) -> None:
    again = run_playbook(lab_inventory, "playbooks/preflight.yml")
    print(f"\npreflight wall time on the 3-host lab (second run): {again.seconds} s")
    assert again.rc == 0, again.output[-6000:]
    assert again.total("changed") == 0, again.changed_tasks()


def test_check_mode_writes_no_fact_file(first_run, lab_inventory: Path, lab_exec) -> None:
    worker = next(iter(inventory_groups(lab_inventory)["ray_workers"]))
    lab_exec(worker, "rm", "-f", FACT)
    try:
        check = run_playbook(lab_inventory, "playbooks/preflight.yml", "--check")
        assert check.rc == 0, check.output[-6000:]
        assert lab_exec(worker, "test", "-e", FACT, check=False).returncode == 1
        assert any("Cache the GPU fact" in t and worker in t for t in check.changed_tasks())
    finally:
        restored = run_playbook(lab_inventory, "playbooks/preflight.yml", "--limit", worker)
        assert restored.rc == 0 and lab_exec(worker, "test", "-e", FACT, check=False).returncode == 0


def _inventory_copy(lab_inventory: Path, tmp_path: Path, edit) -> Path:
    inv = tmp_path / lab_inventory.name
    shutil.copytree(lab_inventory, inv, symlinks=True)
    data = yaml.safe_load((inv / "hosts.yml").read_text())
    edit(data)
    (inv / "hosts.yml").write_text(yaml.safe_dump(data))
    return inv


def test_real_host_problems_are_refused_by_host_variable_and_fix(
    first_run, lab_inventory: Path, lab_ansible, tmp_path: Path
) -> None:
    groups = inventory_groups(lab_inventory)
    head = next(iter(groups["ray_head"]))
    worker = next(iter(groups["ray_workers"]))
    frontend = next(iter(groups["frontend"]))

    def wrong_node_ip(data: dict) -> None:
        data["all"]["children"]["gpu_nodes"]["children"]["ray_workers"]["hosts"][worker][
            "r1deploy_node_ip"
        ] = "192.0.2.77"

    inv = _inventory_copy(lab_inventory, tmp_path, wrong_node_ip)
    # A foreign program on the Ray GCS port of the head (python's http.server, not gcs_server); a port
    # of its own so that a deployed lab's real Ray head does not matter.
    listen = (
        "setsid nohup python3 -m http.server 16667 >/dev/null 2>&1 </dev/null & echo $! >/tmp/pf-port.pid"
    )
    started = lab_ansible(head, "-b", "-m", "ansible.builtin.shell", "-a", listen)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        extra = {
            "r1deploy_ray_port": 16667,
            "r1deploy_venv": "/opt/r1deploy-preflight-test/venv",
            "nccl_socket_ifname": "ib0",
            "preflight_min_shm_mib_cpu": 1 << 20,
            "preflight_venv_gib_cpu": 1 << 20,
            "preflight_supported_os": {"Ubuntu": ["24.04"]},
        }
        run = run_playbook(inv, "playbooks/preflight.yml", "-e", json.dumps(extra))
    finally:
        lab_ansible(head, "-b", "-m", "ansible.builtin.shell", "-a", "kill $(cat /tmp/pf-port.pid)")
    out = run.output
    assert run.rc != 0
    assert "Preflight (hosts) found" in out
    expected = [
        f"{worker}: r1deploy_node_ip 192.0.2.77 is not configured on the host",
        f"{head}: TCP port 16667 (Ray GCS) is held by python3 [r1deploy_ray_port]",
        "nccl_socket_ifname='ib0' matches no interface",
        "/dev/shm is",
        "is not a supported OS (Ubuntu 24.04)",
        "the model and venv need",
    ]
    for needle in expected:
        assert needle in out, (needle, out[-6000:])
    assert frontend in out  # the OS finding names every host, the frontend included
    # Nothing was changed on the way to the refusal.
    assert run.total("changed") == 0, run.changed_tasks()


def test_escape_hatch_relaxes_only_strict_findings(first_run, lab_inventory: Path) -> None:
    strict_only = {"preflight_supported_os": {"Ubuntu": ["24.04"]}, "preflight_min_shm_mib_cpu": 1 << 20}
    refused = run_playbook(lab_inventory, "playbooks/preflight.yml", "-e", json.dumps(strict_only))
    assert refused.rc != 0 and "is not a supported OS (Ubuntu 24.04)" in refused.output
    relaxed = run_playbook(
        lab_inventory,
        "playbooks/preflight.yml",
        "-e",
        json.dumps({**strict_only, "r1deploy_ignore_preflight_errors": True}),
    )
    assert relaxed.rc == 0, relaxed.output[-6000:]
    assert "is not a supported OS (Ubuntu 24.04)" in relaxed.output  # still reported, as a warning
    hard = {
        **strict_only,
        "r1deploy_ignore_preflight_errors": True,
        "preflight_venv_gib_cpu": 1 << 20,
        "r1deploy_venv": "/opt/r1deploy-preflight-test/venv",
    }
    still = run_playbook(lab_inventory, "playbooks/preflight.yml", "-e", json.dumps(hard))
    assert still.rc != 0 and "the model and venv need" in still.output


def test_a_gpu_site_declared_on_gpu_less_hosts_is_refused(first_run, lab_inventory: Path) -> None:
    extra = {
        "r1deploy_gpu_model": "v100-sxm2-32gb",
        "r1deploy_gpus_per_node": 1,
        "vllm_server_dtype": "auto",
        "vllm_server_tensor_parallel_size": 1,
        "vllm_server_pipeline_parallel_size": 2,
    }
    run = run_playbook(lab_inventory, "playbooks/preflight.yml", "-e", json.dumps(extra))
    assert run.rc != 0
    assert "no NVIDIA GPU found (nvidia-smi and lspci see none) [r1deploy_gpus.count]" in run.output
    for host in inventory_groups(lab_inventory)["gpu_nodes"]:
        assert host in run.output


# ---- stale facts: a re-addressed host is judged as it is now ---------------------------------------


def _cached_addresses(host: str) -> list[str]:
    """The IPv4 addresses Ansible's fact cache (ansible.cfg: .cache/facts) holds for ``host``."""
    addresses: list[str] = []
    for path in fact_cache_files(REPO / ".cache" / "facts", host):
        doc = json.loads(path.read_text())
        facts = json.loads(doc["__payload__"]) if "__payload__" in doc else doc  # 2.19 wraps it
        addresses += facts.get("ansible_all_ipv4_addresses", [])
    return addresses


def _r1deploy_check(inventory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "r1deploy"), "check", "-i", str(inventory), "--plain"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_preflight_sees_re_addressed_hosts_as_they_are_now() -> None:
    """A server re-addressed since the last run (here: a small lab of its own whose head and worker
    swap addresses) passes `r1deploy check` against its new address, though the fact cache still
    holds the old one; `lab down` then forgets the facts of the hosts it removed.

    Before preflight gathered its own facts, the second check failed with "r1deploy_node_ip <new> is
    not configured on the host (it has <old>)": `gathering = smart` took the cached copy.
    """
    # Its own small lab, next to the session's (which stays as it is): idle containers, no deploy.
    mini = Lab((session_lab_name() + "-facts")[:23], workers=1, root=REPO, log=print)
    if mini.status() is not None:
        mini.down()  # left over from an interrupted run of this test (this name is this test's own)
    try:
        info = mini.up()
        head = next(h for h in info.hosts if h.group == "ray_head")
        worker = next(h for h in info.hosts if h.group == "ray_workers")
        first = _r1deploy_check(info.inventory_dir)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        assert head.cluster_ip in _cached_addresses(head.name)
        assert worker.cluster_ip not in _cached_addresses(head.name)
        # Re-address: the worker takes the head's address and the head the next free one.
        network = f"{mini.name}-cluster"
        for host in (head, worker):
            subprocess.run([DOCKER, "network", "disconnect", network, host.name], check=True)
        for host in (worker, head):
            subprocess.run([DOCKER, "network", "connect", network, host.name], check=True)
        info = mini.up()  # rewrites the inventory and known_hosts for the new addresses
        moved = next(h for h in info.hosts if h.name == head.name)
        assert moved.cluster_ip != head.cluster_ip
        stale = _cached_addresses(head.name)
        assert head.cluster_ip in stale and moved.cluster_ip not in stale  # the cache is stale now
        second = _r1deploy_check(info.inventory_dir)
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
        assert "is not configured on the host" not in second.stdout
        fresh = _cached_addresses(head.name)
        assert moved.cluster_ip in fresh and head.cluster_ip not in fresh  # refreshed by preflight
        names = [h.name for h in info.hosts]
    finally:
        mini.down()
    assert [n for n in names if fact_cache_files(REPO / ".cache" / "facts", n)] == []
