"""Shared test setup: every tier runs Ansible with the project's ansible.cfg and venv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
# Ansible must not try to write outside the checkout when tests run as any user.
os.environ.setdefault("ANSIBLE_LOCAL_TEMP", str(REPO / ".cache" / "ansible-tmp"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Destructive lab tests (faults, upgrades, reset) run after every other test, in their `order`.

    Each of them leaves the shared lab serving again, but a test that only reads the lab must never
    see it half-way through a fault drill. Mark with ``@pytest.mark.destructive(order=N)``: lower N
    first (default 50); ties keep collection order.
    """
    del config

    def rank(item: pytest.Item) -> tuple[int, int]:
        marker = item.get_closest_marker("destructive")
        if marker is None:
            return (0, 0)
        return (1, int(marker.kwargs.get("order", 50)))

    items.sort(key=rank)  # list.sort is stable: collection order within a rank
