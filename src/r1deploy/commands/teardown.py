"""``r1deploy teardown -i INVENTORY``: stop and disable the stack's units (data kept unless --purge)."""

from __future__ import annotations

import argparse
import sys

from r1deploy.commands.run import add_playbook_options, refuse, run_playbooks

TEARDOWN_PLAYBOOK = "teardown.yml"


def _confirm(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        return False
    what = "stop, disable and REMOVE the stack and its data" if args.purge else "stop and disable the stack"
    target = f" on {args.limit}" if args.limit else ""
    answer = input(f"This will {what}{target} (inventory {args.inventory}). Type 'yes' to continue: ")
    return answer.strip().lower() == "yes"


def _handle(args: argparse.Namespace) -> int:
    if not _confirm(args):
        return refuse(args, "teardown", "not confirmed (answer 'yes', or pass --yes when not on a terminal)")
    extravars = {"r1deploy_teardown_confirmed": True, "r1deploy_teardown_purge": bool(args.purge)}
    return run_playbooks(args, "teardown", [TEARDOWN_PLAYBOOK], extravars=extravars)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "teardown",
        help="stop and disable vLLM, Ray, Open WebUI and nginx (asks first; --purge also removes data)",
        description="Run playbooks/teardown.yml after confirmation. Without --purge the venvs, model and "
        "data stay, so a later deploy is quick; with --purge they are removed.",
    )
    add_playbook_options(parser)
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--purge", action="store_true", help="also remove units, venvs, model and data")
    parser.set_defaults(func=_handle)
