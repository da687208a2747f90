"""``r1deploy upgrade -i INV --lock PATH``: new serving venv beside the old; switch; roll back if unready."""

from __future__ import annotations

import argparse
from pathlib import Path

from r1deploy.commands.run import add_playbook_options, refuse
from r1deploy.day2 import facts_from_run, finish, run_day2

UPGRADE_PLAYBOOK = "upgrade.yml"
FACTS = (
    "r1deploy_upgrade_downtime_seconds",
    "r1deploy_upgrade_rolled_back",
    "r1deploy_upgrade_rollback_seconds",
    "r1deploy_upgrade_new_venv",
)


def _handle(args: argparse.Namespace) -> int:
    lock = Path(args.lock).expanduser()
    if not lock.is_file():
        return refuse(args, "upgrade", f"--lock {args.lock}: no such file (a fully pinned requirements lock)")
    extravars = {"r1deploy_upgrade_lock": str(lock.resolve())}
    code, summary = run_day2(args, "upgrade", [UPGRADE_PLAYBOOK], extravars)
    facts = facts_from_run(summary.get("run_dir"), *FACTS)
    lines = []
    if "r1deploy_upgrade_downtime_seconds" in facts:
        lines.append(f"API downtime: {facts['r1deploy_upgrade_downtime_seconds']} s")
    return finish(args, code, summary, facts, lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "upgrade",
        help="move vLLM/torch/Ray to a new lock: build beside, verify, switch, roll back if not ready",
        description="Run playbooks/upgrade.yml: build <r1deploy_venv>-<lock hash> on every GPU node with "
        "the vllm_runtime role (runtime report, kernel check, same versions everywhere), switch Ray and vLLM "
        "to it in Ray's order and wait for a real chat completion; if that fails, switch back to the "
        "previous venv automatically (exit 1, serving from the previous venv).",
    )
    add_playbook_options(parser)
    parser.add_argument("--lock", required=True, help="controller path of the new fully pinned lock")
    parser.set_defaults(func=_handle)
