"""The firewall role on the deployed lab: idempotent, --check --diff shows rule changes, bad input is
refused before any change, drift is repaired, the rules come back at boot, and a rule that would lock
Ansible out is rolled back by itself.

What the rules let through is tested from outside in test_exposure.py.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.lab.helpers import on_host, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

PLAYBOOK = "playbooks/firewall.yml"
TABLE = "inet r1deploy"


def _live(inventory, host: str) -> str:
    return on_host(inventory, host, f"nft -s list table {TABLE}")


def _state(inventory, host: str) -> str:
    return on_host(inventory, host, "/usr/local/sbin/r1deploy-firewall check").strip()


@pytest.fixture(scope="module")
def worker(deployed_lab) -> str:
    return next(iter(deployed_lab.groups["ray_workers"]))


def test_rules_are_live_persisted_and_in_sync_everywhere(deployed_lab) -> None:
    for host in {h for hosts in deployed_lab.groups.values() for h in hosts}:
        assert _state(deployed_lab.inventory, host) == "in-sync", host
        unit = on_host(
            deployed_lab.inventory,
            host,
            "systemctl is-enabled r1deploy-firewall; systemctl is-active r1deploy-firewall; "
            "stat -c '%a %U' /etc/r1deploy/firewall.nft",
        )
        assert unit.split("\n") == ["enabled", "active", "644 root"], (host, unit)


def test_other_tables_are_left_alone(deployed_lab, worker) -> None:
    """The role replaces its own table only: a table of someone else's survives a re-apply."""
    inv = deployed_lab.inventory
    on_host(inv, worker, "nft add table inet r1deploy_test_other && nft add chain inet r1deploy_test_other c")
    try:
        on_host(inv, worker, "nft -f /etc/r1deploy/firewall.nft")
        assert "table inet r1deploy_test_other" in on_host(inv, worker, "nft list tables")
    finally:
        on_host(inv, worker, "nft delete table inet r1deploy_test_other")
    assert _state(inv, worker) == "in-sync"


def test_firewall_playbook_is_idempotent_and_check_mode_is_clean(deployed_lab) -> None:
    run = run_playbook(deployed_lab.inventory, PLAYBOOK)
    assert run.rc == 0, run.output[-6000:]
    assert run.total("changed") == 0, run.changed_tasks()
    check = run_playbook(deployed_lab.inventory, PLAYBOOK, "--check", "--diff")
    assert check.rc == 0, check.output[-6000:]
    assert check.total("changed") == 0, check.changed_tasks()
    deployed_lab.record("firewall_rerun_seconds", run.seconds)


def test_check_diff_shows_a_rule_change_without_applying_it(deployed_lab, worker) -> None:
    extra = {"firewall_open_ports": [{"port": 9123, "sources": ["192.0.2.7"], "comment": "diff test"}]}
    before = _live(deployed_lab.inventory, worker)
    run = run_playbook(
        deployed_lab.inventory, PLAYBOOK, "--check", "--diff", "--limit", worker, "-e", json.dumps(extra)
    )
    assert run.rc == 0, run.output[-6000:]
    assert re.search(r"^\+\s+ip saddr @open1_v4 tcp dport 9123 accept", run.output, re.MULTILINE), run.output[
        -4000:
    ]
    assert re.search(r"^\+\s+elements = \{ 192\.0\.2\.7 \}", run.output, re.MULTILINE)
    assert run.total("changed") >= 1
    assert _live(deployed_lab.inventory, worker) == before


# Every refusal is unit-tested (tests/unit/test_firewall.py); here three of them end to end.
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"firewall_ssh_sources": ["10.0.0.0/33"]}, r"firewall_ssh_sources has '10\.0\.0\.0/33'"),
        ({"firewall_ssh_sources": ["192.0.2.0/24"]}, r"leaves out [0-9.]+, the address this host sees"),
        ({"firewall_open_ports": [{"port": 9100}]}, r"firewall_open_ports\[0\] is .* needs 'port'"),
    ],
    ids=["bad-cidr", "ssh-lockout", "port-without-sources"],
)
def test_bad_input_is_refused_before_any_change(deployed_lab, extra, expected) -> None:
    run = run_playbook(deployed_lab.inventory, PLAYBOOK, "-e", json.dumps(extra))
    assert run.rc != 0
    assert re.search(expected, run.output), run.output[-4000:]
    assert re.search(r"lab[a-z0-9-]*-(head|worker1|frontend): ", run.output)
    assert "Fix" in run.output
    assert run.total("changed") == 0, run.changed_tasks()


def test_a_member_without_an_address_is_refused(deployed_lab, worker, tmp_path) -> None:
    """A member host without r1deploy_node_ip: refused, naming the host, the variable and the fix."""
    ghost_inventory = tmp_path / "ghost.yml"
    ghost_inventory.write_text("all:\n  children:\n    gpu_nodes:\n      hosts:\n        ghost01: {}\n")
    run = run_playbook(deployed_lab.inventory, PLAYBOOK, "-i", str(ghost_inventory), "--limit", worker)
    assert run.rc != 0
    assert "host ghost01 has none. Fix: set r1deploy_node_ip for ghost01" in run.output, run.output[-3000:]
    assert run.total("changed") == 0, run.changed_tasks()


@pytest.mark.destructive(order=12)
def test_drift_is_repaired_and_the_boot_unit_restores_the_rules(deployed_lab, worker) -> None:
    inv = deployed_lab.inventory
    applied = _live(inv, worker)
    # A reboot: the table is gone until the boot unit loads the file again.
    on_host(inv, worker, f"nft delete table {TABLE} && systemctl restart r1deploy-firewall")
    assert _live(inv, worker) == applied
    assert _state(inv, worker) == "in-sync"
    # A hand-made rule: the next run notices the drift and puts the applied rules back.
    on_host(inv, worker, f"nft insert rule {TABLE} input tcp dport 9124 accept")
    assert _state(inv, worker) == "drift"
    run = run_playbook(inv, PLAYBOOK, "--limit", worker)
    assert run.rc == 0, run.output[-6000:]
    assert "live table inet r1deploy is drift" in run.output
    assert _live(inv, worker) == applied and _state(inv, worker) == "in-sync"


@pytest.mark.destructive(order=13)
def test_rules_that_lock_ansible_out_are_rolled_back_by_themselves(deployed_lab, worker) -> None:
    """SSH on the wrong port: the fresh connection fails, the host's timer restores the previous rules
    and file, and the play says so. Ray and vLLM traffic is untouched throughout (members stay open)."""
    inv = deployed_lab.inventory
    applied = _live(inv, worker)
    rules_file = on_host(inv, worker, "sha256sum /etc/r1deploy/firewall.nft")
    extra = {"firewall_ssh_port": 2222, "firewall_rollback_seconds": 25, "firewall_confirm_timeout": 10}
    run = run_playbook(inv, PLAYBOOK, "--limit", worker, "-e", json.dumps(extra), timeout=600)
    assert run.rc != 0
    assert "no fresh SSH connection from the" in run.output, run.output[-6000:]
    assert "The rollback restored the previous rules" in run.output, run.output[-6000:]
    assert _live(inv, worker) == applied
    assert on_host(inv, worker, "sha256sum /etc/r1deploy/firewall.nft") == rules_file
    assert not on_host(inv, worker, "ls /etc/r1deploy/ | grep -c '^firewall.nft.*~$' || true").strip("0\n")
    assert _state(inv, worker) == "in-sync"
    deployed_lab.record("firewall_rollback_run_seconds", run.seconds)
