"""``r1deploy teardown``: the old name of ``r1deploy reset`` (playbooks/teardown.yml imports reset.yml)."""

from __future__ import annotations

import argparse
import sys

from r1deploy.commands.reset import add_reset_options, run_reset

TEARDOWN_PLAYBOOK = "teardown.yml"


def _handle(args: argparse.Namespace) -> int:
    print("r1deploy teardown is now `r1deploy reset` (same playbook, same options)", file=sys.stderr)
    if args.purge:
        args.remove_models = args.remove_webui_data = True
    legacy = {"r1deploy_teardown_confirmed": True, "r1deploy_teardown_purge": bool(args.purge)}
    return run_reset(args, "teardown", TEARDOWN_PLAYBOOK, legacy)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "teardown",
        help="old name of `reset` (--purge = --remove-models --remove-webui-data)",
        description="Alias of `r1deploy reset`: runs playbooks/teardown.yml, which imports reset.yml.",
    )
    add_reset_options(parser)
    parser.add_argument(
        "--purge", action="store_true", help="also remove the model and Open WebUI's data (old spelling)"
    )
    parser.set_defaults(func=_handle)
