"""``r1deploy check -i INVENTORY``: the preflight plays only (boilerplate + preflight); changes nothing."""

from __future__ import annotations

import argparse

from r1deploy.commands.run import add_playbook_options, run_playbooks

CHECK_PLAYBOOKS = ("boilerplate.yml", "preflight.yml")


def _handle(args: argparse.Namespace) -> int:
    return run_playbooks(args, "check", list(CHECK_PLAYBOOKS))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="run the preflight checks only (inventory, plan, hosts); changes nothing",
        description="Run playbooks/boilerplate.yml and playbooks/preflight.yml in one ansible-playbook "
        "invocation. Exit 2 when the input checks refuse the inventory or the plan.",
    )
    add_playbook_options(parser, targeting=False)
    parser.add_argument("-l", "--limit", help="limit to hosts/groups")
    parser.set_defaults(func=_handle)
