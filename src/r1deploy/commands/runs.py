"""``r1deploy runs``: list past runs; ``r1deploy runs show ID``: replay one run's summary."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from r1deploy.commands.run import add_json_option, print_json, refuse
from r1deploy.events import EXIT_OK, RunState
from r1deploy.progress import failure_lines, fmt_duration, recap_table
from r1deploy.runs import STDOUT, RunFolder, find_run, list_runs, runs_dir


def _console() -> Console:
    """Wide enough for run ids and playbook names when the output is a pipe or a file."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _row(run: RunFolder) -> dict[str, Any]:
    summary = run.summary() or {}
    command = run.command() or {}
    return {
        "id": run.id,
        "command": summary.get("command") or (command.get("argv") or ["", "?"])[1:2][0],
        "playbooks": summary.get("playbooks", []),
        "inventory": summary.get("inventory"),
        "status": summary.get("status", "incomplete"),
        "exit_code": summary.get("exit_code"),
        "duration_s": summary.get("duration_s"),
        "hosts": len(summary.get("hosts", {})),
        "failures": len(summary.get("failures", [])),
        "dir": str(run.path),
    }


def _list(args: argparse.Namespace) -> int:
    rows = [_row(r) for r in list_runs()[: args.limit]]
    if args.json:
        print_json({"ok": True, "runs_dir": str(runs_dir()), "runs": rows})
        return EXIT_OK
    console = _console()
    if not rows:
        console.print(f"no runs yet under {runs_dir()}")
        return EXIT_OK
    table = Table(title=f"runs in {runs_dir()}", title_justify="left")
    for column in ("id", "command", "playbooks", "status", "exit", "duration", "hosts", "failures"):
        table.add_column(column)
    for row in rows:
        style = "green" if row["exit_code"] == 0 else "red"
        table.add_row(
            row["id"],
            str(row["command"]),
            ", ".join(row["playbooks"]),
            Text(str(row["status"]), style=style),
            str(row["exit_code"]),
            fmt_duration(row["duration_s"]),
            str(row["hosts"]),
            str(row["failures"]),
        )
    console.print(table)
    return EXIT_OK


def replay_state(run: RunFolder) -> RunState:
    """The run's final state rebuilt from its recorded events (the same code the live view used)."""
    state = RunState()
    for event in run.events():
        state.feed(event)
    return state


def _show(args: argparse.Namespace) -> int:
    run = find_run(args.id)
    if run is None:
        return refuse(args, "runs show", f"no run {args.id!r} under {runs_dir()} (see `r1deploy runs`)")
    summary = run.summary()
    if summary is None:
        return refuse(args, "runs show", f"run {run.id} has no summary (interrupted before it finished?)")
    if args.json:
        print_json(summary)
        return EXIT_OK
    if args.output:
        sys.stdout.write((run.path / STDOUT).read_text(encoding="utf-8"))
        return EXIT_OK
    console = _console()
    command = run.command() or {}
    console.print(Text(f"run {run.id}: r1deploy {summary.get('command')}", style="bold"))
    console.print(f"  command line: {' '.join(command.get('argv', []))}")
    console.print(f"  playbooks:    {', '.join(summary.get('playbooks', []))}")
    console.print(f"  inventory:    {summary.get('inventory')}")
    console.print(
        f"  started:      {summary.get('started')}  duration {fmt_duration(summary.get('duration_s'))}"
    )
    style = "bold green" if summary.get("ok") else "bold red"
    console.print(
        Text.assemble(
            "  status:       ", (f"{summary.get('status')} (exit {summary.get('exit_code')})", style)
        )
    )
    state = replay_state(run)
    for failure in state.final_failures():
        console.print(Text("\n".join(failure_lines(failure)), style="red"))
    for failure in state.rescued_failures():
        console.print(Text(f"(rescued) {failure.host} | {failure.task}: {failure.message}", style="dim"))
    for error in summary.get("errors", []):
        console.print(Text(f"ERROR: {error}", style="red"))
    if state.hosts:
        console.print(recap_table(state))
    slowest = summary.get("slowest_tasks", [])
    if slowest:
        table = Table(title="slowest tasks", title_justify="left")
        table.add_column("task")
        table.add_column("play")
        table.add_column("duration", justify="right")
        for task in slowest:
            table.add_row(task["name"], task["play"], fmt_duration(task["duration_s"]))
        console.print(table)
    console.print(f"folder: {run.path}")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list past runs; `runs show ID` replays one",
        description="Runs are recorded under $R1DEPLOY_STATE_DIR/runs "
        "(default ~/.local/state/r1deploy/runs).",
    )
    add_json_option(parser)
    parser.add_argument("-n", "--limit", type=int, default=20, help="how many runs to list (default 20)")
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    show = sub.add_parser(
        "show",
        help="replay a run's summary",
        description="ID: a run id, a unique prefix, 'last', or -N (the N-th newest)",
    )
    show.add_argument("id", help="run id, unique prefix, 'last' or -N")
    show.add_argument("--output", action="store_true", help="print Ansible's own output of that run instead")
    add_json_option(show, suppress=True)
    show.set_defaults(func=_show)
