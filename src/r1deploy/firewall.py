"""The firewall's rules, derived from the inventory: who may reach what on each host.

Pure Python, called by the ``firewall`` role through the ``r1deploy_firewall_plan`` filter
(``plugins/filter/r1deploy_firewall.py``). It validates every address and port first and raises
:class:`FirewallError` naming the host, the variable and the fix, so a bad value stops the play
before any host is changed. The role's template turns the plan into one nftables table.

The model (docs/runbooks/security.md):

- members: the ``r1deploy_node_ip`` (and ``ansible_host`` when it is an address) of every host of
  the member groups (``gpu_nodes``): everything on a GPU host (Ray, NCCL/gloo, vLLM's internal
  ports, which are many and partly random) is open to these addresses only;
- vLLM's API port on GPU hosts: members, the frontend hosts, the controller (``r1deploy smoke``,
  ``bench``) and any extra sources;
- the frontend's web ports: from anywhere unless narrowed;
- SSH: from anywhere unless narrowed, and never narrowed so far that the controller is shut out;
- ``open_ports``: ports opened on purpose, each with its own sources.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ANY = ("0.0.0.0/0", "::/0")
PROTOCOLS = ("tcp", "udp")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FirewallError(ValueError):
    """A value the firewall cannot turn into rules; the message names host, variable and fix."""


@dataclass(frozen=True)
class Sources:
    """A list of allowed source networks, split by family for nftables' typed sets."""

    v4: tuple[str, ...]
    v6: tuple[str, ...]

    @property
    def anywhere(self) -> bool:
        return "0.0.0.0/0" in self.v4 and "::/0" in self.v6

    def as_dict(self) -> dict[str, Any]:
        return {"v4": list(self.v4), "v6": list(self.v6), "any": self.anywhere}

    def contains(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        nets = self.v4 if ip.version == 4 else self.v6
        return any(ip in ipaddress.ip_network(n) for n in nets)


def parse_network(value: Any, host: str, variable: str) -> list[Network]:
    """One source entry: an address, a network in CIDR notation, or ``any`` (both families)."""
    text = str(value).strip()
    if text.lower() == "any":
        return [ipaddress.ip_network(n) for n in ANY]
    try:
        return [ipaddress.ip_network(text, strict=True)]
    except ValueError as exc:
        hint = ""
        try:
            loose = ipaddress.ip_network(text, strict=False)
            hint = f" (host bits set: did you mean {loose}?)"
        except ValueError:
            pass
        raise FirewallError(
            f"{host}: {variable} has {text!r}, which is not an IP address, a network in CIDR notation "
            f"(e.g. 192.0.2.0/24, 2001:db8::/64) or 'any'{hint}: {exc}. "
            f"Fix: correct that entry of {variable}."
        ) from None


def sources(values: Any, host: str, variable: str) -> Sources:
    """Validate and normalise a list of sources; collapse overlapping networks."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise FirewallError(
            f"{host}: {variable} must be a list of addresses or networks (e.g. ['192.0.2.0/24', 'any']), "
            f"not {values!r}. Fix: write it as a YAML list."
        )
    nets: list[Network] = []
    for value in values:
        nets += parse_network(value, host, variable)
    v4 = ipaddress.collapse_addresses(n for n in nets if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in nets if n.version == 6)
    return Sources(tuple(_text(n) for n in v4), tuple(_text(n) for n in v6))


def _text(net: Network) -> str:
    """A single address without its /32 or /128, as people write it (nftables takes both)."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def host_addresses(hostname: str, known: Sequence[Any], host: str) -> list[str]:
    """The addresses a member or frontend host sends from: r1deploy_node_ip (required) and
    ansible_host when it is an address (a name there is SSH's business, not the firewall's).
    ``known`` is ``[r1deploy_node_ip, ansible_host]`` of that host, either may be empty."""
    node_ip = str(known[0] if len(known) > 0 and known[0] else "").strip()
    if not node_ip:
        raise FirewallError(
            f"{host}: the firewall derives its rules from every host's r1deploy_node_ip, and host "
            f"{hostname} has none. Fix: set r1deploy_node_ip for {hostname} (its address on the cluster "
            f"network) in the inventory."
        )
    if not _is_address(node_ip):
        raise FirewallError(
            f"{host}: r1deploy_node_ip of host {hostname} is {node_ip!r}, not an IP address; the firewall "
            f"cannot allow a name. Fix: set r1deploy_node_ip of {hostname} to its cluster address."
        )
    found = [node_ip]
    ansible_host = str(known[1] if len(known) > 1 and known[1] else "").strip()
    if ansible_host and _is_address(ansible_host) and ansible_host not in found:
        found.append(ansible_host)
    return found


def group_sources(
    groups: Mapping[str, Sequence[str]],
    names: Sequence[str],
    addresses: Mapping[str, Sequence[Any]],
    host: str,
    variable: str,
) -> tuple[list[str], Sources]:
    """Hosts of some inventory groups and their addresses as sources."""
    unknown = [g for g in names if g not in groups]
    if unknown:
        raise FirewallError(
            f"{host}: {variable} names inventory group(s) {unknown} that do not exist (groups: "
            f"{sorted(g for g in groups if g not in ('all', 'ungrouped'))}). Fix: correct {variable}."
        )
    members = sorted({h for g in names for h in groups[g]})
    found = [a for h in members for a in host_addresses(h, addresses.get(h, ()), host)]
    return members, sources(found, host, variable)


def port_spec(value: Any, host: str, variable: str) -> str:
    """A port (8000) or a range ("10002-10999"), as nftables writes it."""
    text = str(value).strip()
    parts = text.split("-")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(0 < n < 65536 for n in numbers) or numbers != sorted(numbers):
        raise FirewallError(
            f"{host}: {variable} has port {text!r}; a port is 1-65535, a range LOW-HIGH (e.g. 10002-10999). "
            f"Fix: correct {variable}."
        )
    return text


def open_ports(entries: Any, host: str, variable: str) -> list[dict[str, Any]]:
    """Ports opened on purpose: [{port, proto (tcp), sources (required), comment}]."""
    if not isinstance(entries, Sequence) or isinstance(entries, str | bytes):
        raise FirewallError(
            f"{host}: {variable} must be a list of {{port, proto, sources, comment}} entries."
        )
    result = []
    for index, entry in enumerate(entries):
        where = f"{variable}[{index}]"
        if not isinstance(entry, Mapping) or "port" not in entry or "sources" not in entry:
            raise FirewallError(
                f"{host}: {where} is {entry!r}; each entry needs 'port' and 'sources' (who may connect, e.g. "
                f"['192.0.2.10'] or ['any']), optionally 'proto' (tcp/udp) and 'comment'. "
                f"Fix: complete {where}."
            )
        proto = str(entry.get("proto", "tcp")).lower()
        if proto not in PROTOCOLS:
            raise FirewallError(f"{host}: {where}.proto is {proto!r}; use tcp or udp. Fix: correct {where}.")
        comment = str(entry.get("comment", "")).replace('"', "'")[:100]
        result.append(
            {
                "port": port_spec(entry["port"], host, where + ".port"),
                "proto": proto,
                "sources": sources(entry["sources"], host, where + ".sources").as_dict(),
                "comment": comment,
            }
        )
    return result


def plan(params: Mapping[str, Any]) -> dict[str, Any]:
    """The rules for one host. ``params`` is what the role passes (see roles/firewall/tasks/plan.yml)."""
    host = str(params["host"])
    groups: Mapping[str, Sequence[str]] = params["groups"]
    addresses: Mapping[str, Sequence[Any]] = params["addresses"]
    member_groups = list(params["member_groups"])
    frontend_groups = list(params["frontend_groups"])

    members, member_sources = group_sources(groups, member_groups, addresses, host, "firewall_member_groups")
    frontends, frontend_sources = group_sources(
        groups, frontend_groups, addresses, host, "firewall_frontend_groups"
    )
    controller = str(params.get("controller_address") or "").strip()
    if controller and not _is_address(controller):
        controller = ""
    ssh = sources(params["ssh_sources"], host, "firewall_ssh_sources")
    if controller and not ssh.contains(controller):
        raise FirewallError(
            f"{host}: firewall_ssh_sources {list(ssh.v4 + ssh.v6)} leaves out {controller}, the address "
            f"this host sees Ansible connect from: the rules would lock Ansible out. Fix: add {controller} "
            f"(or its network) to firewall_ssh_sources."
        )
    api_extra = list(params.get("vllm_api_sources") or [])
    sources(api_extra, host, "firewall_vllm_api_sources")  # names the right variable on error
    if controller and params.get("vllm_api_allow_controller", True):
        api_extra.append(controller)
    vllm_api = sources(
        list(member_sources.v4 + member_sources.v6 + frontend_sources.v4 + frontend_sources.v6) + api_extra,
        host,
        "firewall_vllm_api_sources",
    )
    is_member = host in members
    is_frontend = host in frontends
    web_ports = [port_spec(p, host, "firewall_web_ports") for p in params.get("web_ports") or []]
    return {
        "host": host,
        "is_member": is_member,
        "is_frontend": is_frontend,
        "members": members,
        "frontends": frontends,
        "controller": controller,
        "member_sources": member_sources.as_dict(),
        "ssh_port": port_spec(params["ssh_port"], host, "firewall_ssh_port"),
        "ssh_sources": ssh.as_dict(),
        "vllm_api_port": port_spec(params["vllm_api_port"], host, "firewall_vllm_api_port"),
        "vllm_api_sources": vllm_api.as_dict(),
        "web_ports": web_ports,
        "web_sources": sources(params["web_sources"], host, "firewall_web_sources").as_dict(),
        "open_ports": open_ports(params.get("open_ports") or [], host, "firewall_open_ports"),
        "monitoring_ports": monitoring_ports(params, host),
    }


def monitoring_ports(params: Mapping[str, Any], host: str) -> list[dict[str, Any]]:
    """The scrape ports (node exporter; Ray's metrics on GPU hosts), open to the Prometheus host only."""
    scrapers = [str(a) for a in params.get("monitoring_sources") or [] if str(a).strip()]
    if not scrapers:
        return []
    entries = [
        {"port": port, "proto": "tcp", "sources": scrapers, "comment": "Prometheus scrape"}
        for port in params.get("monitoring_ports") or []
    ]
    return open_ports(entries, host, "firewall_monitoring_ports")
