"""Shared test setup: every tier runs Ansible with the project's ansible.cfg and venv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
# Ansible must not try to write outside the checkout when tests run as any user.
os.environ.setdefault("ANSIBLE_LOCAL_TEMP", str(REPO / ".cache" / "ansible-tmp"))
