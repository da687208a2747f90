"""``r1deploy restart -i INVENTORY``: restart vLLM, Ray and the frontend in Ray's order; API downtime."""

from __future__ import annotations

import argparse

from r1deploy.commands.run import add_playbook_options, refuse
from r1deploy.day2 import facts_from_run, finish, run_day2

RESTART_PLAYBOOK = "restart.yml"
DOWNTIME = "r1deploy_restart_downtime_seconds"


def _handle(args: argparse.Namespace) -> int:
    if args.batch < 1:
        return refuse(args, "restart", f"--batch {args.batch}: workers restarted at a time must be 1 or more")
    extravars = {"r1deploy_restart_batch": args.batch, "r1deploy_restart_frontend": not args.no_frontend}
    code, summary = run_day2(args, "restart", [RESTART_PLAYBOOK], extravars)
    facts = facts_from_run(summary.get("run_dir"), DOWNTIME)
    lines = []
    if DOWNTIME in facts:
        lines.append(f"API downtime: {facts[DOWNTIME]} s (vLLM stopped to first chat completion answered)")
    return finish(args, code, summary, facts, lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "restart",
        help="restart vLLM, the Ray workers and head in Ray's order, then the frontend; prints API downtime",
        description="Run playbooks/restart.yml: stop vLLM (and a watchdog), stop the Ray workers in batches, "
        "restart the head, start the workers, wait for every node, start vLLM and wait for a real chat "
        "completion, restart Open WebUI and nginx (their data kept). Prints the API's downtime.",
    )
    add_playbook_options(parser)
    parser.add_argument("--batch", type=int, default=1, help="Ray workers restarted at a time (default 1)")
    parser.add_argument("--no-frontend", action="store_true", help="leave Open WebUI and nginx running")
    parser.set_defaults(func=_handle)
