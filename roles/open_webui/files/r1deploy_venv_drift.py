#!/usr/bin/env python3
"""Compare a venv's installed distributions with pinned requirement files; print what pip would install.

Run with the venv's own interpreter: `venv/bin/python r1deploy_venv_drift.py requirements.txt ...`.
Prints one `Would install NAME==VERSION (installed: X)` line per pin the venv does not satisfy and
nothing when it matches, exit 0 either way (exit 2 on an unreadable file). It reads package metadata
only: ~0.2 s where `pip install --dry-run` spends ~10 s resolving the same 240 pins on every run.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*(?P<version>[^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_applies(line: str) -> bool:
    """A pin whose environment marker excludes this interpreter is not expected in the venv."""
    if ";" not in line:
        return True
    text = line.split(";", 1)[1].split("\\", 1)[0].split(" --hash", 1)[0].strip()
    try:
        from pip._vendor.packaging.markers import Marker  # the venv's pip carries packaging
    except ImportError:
        return True
    return bool(Marker(text).evaluate())


def pins(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.split(" #", 1)[0].strip()
            match = PIN.match(line)
            if match and marker_applies(line):
                out[canonical(match.group("name"))] = match.group("version")
    return out


def main(argv: list[str]) -> int:
    wanted: dict[str, str] = {}
    try:
        for path in argv:
            wanted.update(pins(path))
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    installed = {canonical(d.metadata["Name"] or ""): d.version for d in importlib.metadata.distributions()}
    for name, version in sorted(wanted.items()):
        if installed.get(name) != version:
            print(f"Would install {name}=={version} (installed: {installed.get(name) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
