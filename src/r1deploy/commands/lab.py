"""``r1deploy lab up|down|status``: the multi-host systemd test lab (see docs/runbooks/lab.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from r1deploy.lab import Lab, LabError, LabInfo, LabInputError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("lab", help="bring the local multi-host test lab up, down, or show it")
    actions = parser.add_subparsers(dest="lab_action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        default=None,
        help="lab name, starts with 'lab' (default: $R1DEPLOY_LAB_NAME or 'lab'); selects inventories/NAME/",
    )
    up = actions.add_parser("up", parents=[common], help="create or reuse the lab, write inventories/NAME/")
    up.add_argument("--workers", type=int, default=1, help="number of ray_workers hosts (default 1)")
    up.set_defaults(func=_up)
    down = actions.add_parser("down", parents=[common], help="remove everything the lab made")
    down.set_defaults(func=_down)
    status = actions.add_parser("status", parents=[common], help="hosts, addresses, state, mirror URLs")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _guard(action: Any) -> int:
    try:
        return int(action())
    except LabInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _up(args: argparse.Namespace) -> int:
    def run() -> int:
        info = Lab(args.name, workers=args.workers, log=_log).up()
        print(render(info))
        return EXIT_OK

    return _guard(run)


def _down(args: argparse.Namespace) -> int:
    def run() -> int:
        lab = Lab(args.name, log=_log)
        removed = lab.down()
        print(f"lab {lab.name}: " + ("removed " + ", ".join(removed) if removed else "nothing to remove"))
        return EXIT_OK

    return _guard(run)


def _status(args: argparse.Namespace) -> int:
    def run() -> int:
        lab = Lab(args.name, log=_log)
        info = lab.status()
        if info is None:
            if args.json:
                print(json.dumps({"name": lab.name, "up": False}))
            else:
                print(f"lab {lab.name} is not up (start it with `r1deploy lab up --name {lab.name}`)")
            return EXIT_FAILED
        healthy = all(h.state == "running" for h in info.hosts) and all(info.mirrors_running.values())
        if args.json:
            print(json.dumps({**info.to_dict(), "up": healthy}, indent=2))
        else:
            print(render(info))
        return EXIT_OK if healthy else EXIT_FAILED

    return _guard(run)


def render(info: LabInfo) -> str:
    rows = [("HOST", "GROUP", "CLUSTER IP", "PUBLIC IP", "STATE")]
    rows += [(h.name, h.group, h.cluster_ip, h.public_ip or "-", h.state) for h in info.hosts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"lab {info.name}  inventory {info.inventory_dir}  image {info.image}"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    state = {k: "running" if v else "STOPPED" for k, v in info.mirrors_running.items()}
    lines.append(f"apt mirror   {info.apt_mirror_url}  ({state.get('apt', '?')})")
    lines.append(f"apt security {info.apt_security_mirror_url}")
    lines.append(f"pip mirror   {info.pip_find_links}  ({state.get('pip', '?')})")
    return "\n".join(lines)
