"""Which installed packages are the driver's, held so unattended upgrades cannot move them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


def hold_packages(installed: Mapping[str, Any], hold_regex: str) -> list[str]:
    """Installed driver packages (names from ``package_facts``) that must be held."""
    rx = re.compile(hold_regex)
    return sorted(name for name in installed if rx.search(name))


def versionlock_lines(installed: Mapping[str, Sequence[Mapping[str, Any]]], hold_regex: str) -> list[str]:
    """``/etc/dnf/plugins/versionlock.list`` entries for the installed driver packages."""
    out = []
    for name in hold_packages(installed, hold_regex):
        for p in installed[name]:
            epoch = p.get("epoch") or 0
            out.append(f"{name}-{epoch}:{p.get('version')}-{p.get('release')}.*")
    return sorted(out)
