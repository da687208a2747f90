"""Ansible filter over r1deploy.firewall (the firewall's rules from the inventory); no rule lives here.

``r1deploy_firewall_plan`` returns the plan for one host, or ``{"error": MESSAGE}`` when a value is
wrong, so the role can stop with that message (host, variable, fix) before anything changes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    from r1deploy import firewall
except ImportError:  # running from a checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from r1deploy import firewall


def _plain(value: Any) -> Any:
    """Ansible's lazy containers and tagged strings as plain Python objects."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def firewall_plan(params: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {"error": "", **firewall.plan(_plain(params))}
    except firewall.FirewallError as exc:
        return {"error": str(exc)}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"r1deploy_firewall_plan": firewall_plan}
