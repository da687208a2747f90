"""r1deploy.firewall: the rules derived from the inventory, and every refusal names host, variable, fix."""

from __future__ import annotations

from typing import Any

import pytest

from r1deploy import firewall

GROUPS = {
    "all": ["gpu01", "gpu02", "web01"],
    "gpu_nodes": ["gpu01", "gpu02"],
    "ray_head": ["gpu01"],
    "ray_workers": ["gpu02"],
    "frontend": ["web01"],
}
ADDRESSES = {
    "gpu01": ["10.0.0.11", "10.0.0.11"],
    "gpu02": ["10.0.0.12", "192.0.2.12"],
    "web01": ["10.0.0.20", "web01.example.com"],
}


def params(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": "gpu01",
        "groups": GROUPS,
        "addresses": ADDRESSES,
        "member_groups": ["gpu_nodes"],
        "frontend_groups": ["frontend"],
        "controller_address": "10.0.0.1",
        "ssh_port": 22,
        "ssh_sources": ["any"],
        "vllm_api_port": 8000,
        "vllm_api_sources": [],
        "vllm_api_allow_controller": True,
        "web_ports": [80, 443],
        "web_sources": ["any"],
        "open_ports": [],
    }
    base.update(overrides)
    return base


def test_members_are_the_gpu_nodes_node_ips_and_ansible_host_addresses() -> None:
    plan = firewall.plan(params())
    assert plan["is_member"] and not plan["is_frontend"]
    assert plan["members"] == ["gpu01", "gpu02"]
    assert plan["member_sources"]["v4"] == ["10.0.0.11", "10.0.0.12", "192.0.2.12"]
    assert not plan["member_sources"]["any"]


def test_vllm_api_is_open_to_members_frontends_and_the_controller_only() -> None:
    plan = firewall.plan(params())
    # web01's ansible_host is a name: only its node ip counts.
    assert plan["vllm_api_sources"]["v4"] == [
        "10.0.0.1",
        "10.0.0.11",
        "10.0.0.12",
        "10.0.0.20",
        "192.0.2.12",
    ]
    without = firewall.plan(params(vllm_api_allow_controller=False))
    assert "10.0.0.1" not in without["vllm_api_sources"]["v4"]


def test_any_means_both_families_and_networks_collapse() -> None:
    plan = firewall.plan(
        params(ssh_sources=["any"], web_sources=["10.1.0.0/25", "10.1.0.128/25", "2001:db8::/64"])
    )
    assert plan["ssh_sources"] == {"v4": ["0.0.0.0/0"], "v6": ["::/0"], "any": True}
    assert plan["web_sources"] == {"v4": ["10.1.0.0/24"], "v6": ["2001:db8::/64"], "any": False}


def test_frontend_host_gets_the_web_ports() -> None:
    plan = firewall.plan(params(host="web01"))
    assert plan["is_frontend"] and not plan["is_member"]
    assert plan["web_ports"] == ["80", "443"]


def test_open_ports_keep_their_own_sources() -> None:
    plan = firewall.plan(
        params(
            open_ports=[{"port": "9100-9101", "proto": "TCP", "sources": ["192.0.2.50"], "comment": 'a "b"'}]
        )
    )
    assert plan["open_ports"] == [
        {
            "port": "9100-9101",
            "proto": "tcp",
            "sources": {"v4": ["192.0.2.50"], "v6": [], "any": False},
            "comment": "a 'b'",
        }
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"ssh_sources": ["10.0.0.0/33"]},
            [
                "gpu01: firewall_ssh_sources has '10.0.0.0/33'",
                "Fix: correct that entry of firewall_ssh_sources",
            ],
        ),
        ({"web_sources": ["10.0.0.5/24"]}, ["firewall_web_sources", "did you mean 10.0.0.0/24?"]),
        ({"ssh_sources": "any"}, ["firewall_ssh_sources must be a list"]),
        (
            {"ssh_sources": ["192.0.2.0/24"]},
            ["leaves out 10.0.0.1", "lock Ansible out", "Fix: add 10.0.0.1"],
        ),
        (
            {"addresses": {**ADDRESSES, "gpu02": ["", "192.0.2.12"]}},
            ["gpu01:", "host gpu02 has none", "Fix: set r1deploy_node_ip for gpu02"],
        ),
        (
            {"addresses": {**ADDRESSES, "gpu02": ["gpu02.example.com", ""]}},
            ["r1deploy_node_ip of host gpu02 is 'gpu02.example.com', not an IP address"],
        ),
        ({"member_groups": ["gpus"]}, ["firewall_member_groups names inventory group(s) ['gpus']"]),
        ({"vllm_api_port": 70000}, ["firewall_vllm_api_port has port '70000'"]),
        ({"open_ports": [{"port": 9100}]}, ["firewall_open_ports[0]", "needs 'port' and 'sources'"]),
        (
            {"open_ports": [{"port": 9100, "proto": "sctp", "sources": ["any"]}]},
            ["firewall_open_ports[0].proto is 'sctp'"],
        ),
        (
            {"open_ports": [{"port": "9200-9100", "sources": ["any"]}]},
            ["firewall_open_ports[0].port has port '9200-9100'"],
        ),
        (
            {"vllm_api_sources": ["not-an-address"]},
            ["firewall_vllm_api_sources has 'not-an-address'"],
        ),
    ],
    ids=[
        "bad-prefix",
        "host-bits",
        "not-a-list",
        "ssh-lockout",
        "missing-node-ip",
        "node-ip-name",
        "unknown-group",
        "bad-port",
        "open-port-no-sources",
        "open-port-proto",
        "open-port-range",
        "api-source",
    ],
)
def test_bad_input_is_refused_with_host_variable_and_fix(
    overrides: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(firewall.FirewallError) as info:
        firewall.plan(params(**overrides))
    for part in expected:
        assert part in str(info.value)


def test_no_controller_address_skips_the_lockout_check() -> None:
    """A local connection has no SSH source; narrowing SSH is then the operator's call."""
    plan = firewall.plan(params(controller_address="", ssh_sources=["192.0.2.0/24"]))
    assert plan["controller"] == "" and plan["ssh_sources"]["v4"] == ["192.0.2.0/24"]
