"""Helpers of the day-2 commands (restart, diagnose, reset, upgrade): facts their playbooks set, read back
from the CLI's run folder (``events.jsonl``), so the command can print them after the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def facts_from_run(run_dir: str | Path | None, *names: str) -> dict[str, Any]:
    """The last value each named fact was set to (``set_fact`` results) during the run."""
    found: dict[str, Any] = {}
    if not run_dir:
        return found
    events = Path(run_dir) / "events.jsonl"
    if not events.is_file():
        return found
    for line in events.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") != "runner_on_ok":
            continue
        facts = ((event.get("event_data") or {}).get("res") or {}).get("ansible_facts") or {}
        for name in names:
            if name in facts:
                found[name] = facts[name]
    return found


def run_day2(
    args: Any, command: str, playbooks: list[str], extravars: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """``run_playbooks`` of commands/run.py, also returning the run's summary (for the facts it set)."""
    import sys

    from r1deploy.commands.run import refuse, request_from_args
    from r1deploy.progress import PlainView, make_view
    from r1deploy.runner import BadInput, execute

    try:
        request = request_from_args(args, command, playbooks, extravars)
        view = (
            make_view(json_mode=args.json)
            if not getattr(args, "plain", False)
            else PlainView(sys.stderr if args.json else sys.stdout)
        )
        result = execute(request, view)
    except BadInput as exc:
        return refuse(args, command, str(exc)), {}
    return result.exit_code, result.summary


def finish(args: Any, code: int, summary: dict[str, Any], facts: dict[str, Any], lines: list[str]) -> int:
    """Print the summary with the facts (``--json``) or the lines (terminal); return the exit code."""
    from r1deploy.commands.run import print_json

    if args.json:
        print_json({**summary, "facts": facts})
    elif code == 0:
        for line in lines:
            print(line)
    return code
