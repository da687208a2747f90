"""``r1deploy deploy -i INVENTORY``: the whole stack (playbooks/site.yml) through the runner path."""

from __future__ import annotations

import argparse

from r1deploy.commands.run import add_playbook_options, run_playbooks

SITE_PLAYBOOK = "site.yml"


def _handle(args: argparse.Namespace) -> int:
    return run_playbooks(args, "deploy", [SITE_PLAYBOOK])


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="deploy the whole stack (playbooks/site.yml)",
        description="Run playbooks/site.yml: checks, base OS, GPU stack, vLLM over Ray, Open WebUI behind "
        "nginx. Exit codes: 0 ok, 1 failed task, 2 bad input or refused plan, 3 unreachable host, "
        "130 interrupted.",
    )
    add_playbook_options(parser)
    parser.set_defaults(func=_handle)
