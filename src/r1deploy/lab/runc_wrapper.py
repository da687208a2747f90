#!/usr/bin/python3
"""OCI runtime wrapper for machines whose capability bounding set lacks CAP_SYS_RESOURCE.

dockerd runs this instead of ``runc``. ``--privileged`` asks for every capability, and runc fails
with "unable to apply caps: operation not permitted" when the kernel's bounding set lacks one. The
wrapper removes the missing capabilities from the bundle's ``config.json`` (``create``/``run``) and from
the ``--process`` JSON (``exec``), then execs the real runc with the same arguments.

Standalone on purpose (stdlib only): ``r1deploy lab`` copies this file into its state folder and
dockerd runs it with the system Python.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

REAL_RUNC = os.environ.get("R1DEPLOY_REAL_RUNC", "/usr/sbin/runc")
DROP = ("CAP_SYS_RESOURCE",)
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def strip_caps(process: dict[str, Any], drop: tuple[str, ...] = DROP) -> bool:
    """Remove ``drop`` from every capability set of an OCI process object; True if anything changed."""
    caps = process.get("capabilities") or {}
    changed = False
    for key in CAP_SETS:
        values = caps.get(key)
        if values:
            kept = [c for c in values if c not in drop]
            if len(kept) != len(values):
                caps[key] = kept
                changed = True
    return changed


def _rewrite(path: str, pick: str | None) -> None:
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    target = doc.get(pick, {}) if pick else doc
    if strip_caps(target):
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)


def _option(args: list[str], name: str) -> str | None:
    """Value of ``--name VALUE`` or ``--name=VALUE`` in runc's argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _subcommand(args: list[str]) -> str | None:
    # Global options' values are paths or formats, never one of these words.
    return next((a for a in args if a in ("create", "run", "exec")), None)


def patch(args: list[str]) -> None:
    """Edit the JSON files the runc command in ``args`` will read."""
    sub = _subcommand(args)
    if sub in ("create", "run"):
        bundle = _option(args, "--bundle") or _option(args, "-b") or os.getcwd()
        config = os.path.join(bundle, "config.json")
        if os.path.exists(config):
            _rewrite(config, "process")
    if sub == "exec":
        process = _option(args, "--process") or _option(args, "-p")
        if process and os.path.exists(process):
            _rewrite(process, None)


def main() -> None:
    args = sys.argv[1:]
    patch(args)
    os.execv(REAL_RUNC, [REAL_RUNC, *args])


if __name__ == "__main__":
    main()
