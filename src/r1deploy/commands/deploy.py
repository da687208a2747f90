"""``r1deploy deploy -i INVENTORY``: the whole stack (playbooks/site.yml) through the runner path."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from r1deploy.commands.run import add_playbook_options, run_playbooks
from r1deploy.runner import RunRequest

SITE_PLAYBOOK = "site.yml"


def closing_block(request: RunRequest) -> tuple[str, dict[str, Any]] | None:
    """How to sign in and what to run next (r1deploy.pointers), after a deploy that succeeded."""
    if request.check or request.limit or request.tags:
        return None  # a partial or dry run: the stack may not be (fully) there
    from r1deploy import pointers
    from r1deploy.status import StatusError, endpoints

    try:
        found = pointers.build(request.inventory, endpoints(request.inventory))
    except StatusError as exc:
        print(f"note: cannot list the stack's addresses: {exc}", file=sys.stderr)
        return None
    return pointers.render(found), found.as_dict()


def _handle(args: argparse.Namespace) -> int:
    return run_playbooks(args, "deploy", [SITE_PLAYBOOK], closing=closing_block)


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
