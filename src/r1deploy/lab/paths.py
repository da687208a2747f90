"""Where the lab keeps things: repository root, state folder, caches; lab-name validation."""

from __future__ import annotations

import os
import re
from pathlib import Path

NAME_RE = re.compile(r"^lab[a-z0-9-]{0,20}$")
DEFAULT_NAME = "lab"


class LabError(RuntimeError):
    """A lab operation failed; the message says what and how to fix it."""


class LabInputError(LabError):
    """The request itself is wrong (name, worker count): exit code 2."""


def validate_name(name: str) -> str:
    """Lab names prefix containers/networks and pick ``inventories/<name>/`` (git-ignored as ``lab*``)."""
    if not NAME_RE.match(name):
        raise LabInputError(
            f"invalid lab name {name!r}: use 'lab' followed by up to 20 of [a-z0-9-] "
            "(e.g. 'lab', 'lab-serving'); names start with 'lab' so inventories/<name>/ stays git-ignored"
        )
    return name


def default_name() -> str:
    return os.environ.get("R1DEPLOY_LAB_NAME") or DEFAULT_NAME


def repo_root() -> Path:
    """The r1deploy checkout (roles/, inventories/): $R1DEPLOY_ROOT, else the one above cwd or this file."""
    env = os.environ.get("R1DEPLOY_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd(), Path(__file__).resolve()):
        for candidate in (start, *start.parents):
            if (candidate / "roles").is_dir() and (candidate / "inventories").is_dir():
                return candidate
    raise LabError(
        "cannot find the r1deploy checkout (roles/, inventories/): run from it or set R1DEPLOY_ROOT"
    )


def state_dir() -> Path:
    """Machine-wide lab state (dockerd pid/log, runtime wrapper, per-lab mirror processes)."""
    env = os.environ.get("R1DEPLOY_LAB_STATE_DIR")
    if env:
        path = Path(env)
    elif os.geteuid() == 0:
        path = Path("/var/lib/r1deploy-lab")
    else:
        path = cache_dir() / "lab-state"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Rebuildable caches kept across labs (wheelhouse, apt cache, models)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "r1deploy"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lab_state_dir(name: str) -> Path:
    """One lab's pidfiles, logs, mirror config (created by ``up``; removed by ``down``)."""
    return state_dir() / "labs" / validate_name(name)
