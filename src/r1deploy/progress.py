"""What the operator sees while a playbook runs: a rich live view on a terminal, plain lines elsewhere.

Both views get the same calls from :mod:`r1deploy.runner`: ``start``, ``update`` (after every runner
event has been applied to the :class:`~r1deploy.events.RunState`), ``note`` and ``finish``. Failures
are printed in full the moment they happen; the recap table comes at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from r1deploy.events import STAT_KEYS, Failure, RunState

_STATUS_STYLE = {
    "ok": "green",
    "changed": "yellow",
    "failed": "bold red",
    "unreachable": "bold red",
    "skipped": "cyan",
    "ignored": "magenta",
    "rescued": "magenta",
}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def task_position(state: RunState, expected: int | None) -> str:
    n = state.tasks_total
    if expected and expected >= n:
        return f"task {n} of ~{expected}"
    return f"task {n}"


def failure_lines(failure: Failure) -> list[str]:
    kind = "UNREACHABLE" if failure.unreachable else "FAILED"
    lines = [f"{kind}: {failure.host} | {failure.task}"]
    for line in failure.message.splitlines() or [""]:
        lines.append(f"    {line}")
    if failure.rc is not None:
        lines.append(f"    rc={failure.rc}")
    if failure.stderr_tail:
        lines.append("    last stderr lines:")
        lines.extend(f"      {line}" for line in failure.stderr_tail)
    if failure.path:
        lines.append(f"    task at {failure.path}")
    return lines


def recap_table(state: RunState, title: str = "Recap") -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("host")
    for key in STAT_KEYS:
        table.add_column(key, justify="right")
    for name, counts in sorted(state.hosts.items()):
        row = counts.as_dict()
        cells = [Text(str(row[key]), style=_STATUS_STYLE[key] if row[key] else "dim") for key in STAT_KEYS]
        host_style = "bold red" if row["failed"] or row["unreachable"] else ""
        table.add_row(Text(name, style=host_style), *cells)
    return table


def recap_text(state: RunState) -> list[str]:
    width = max([len(h) for h in state.hosts] + [4])
    lines = ["RECAP " + "-" * 60]
    for name, counts in sorted(state.hosts.items()):
        row = counts.as_dict()
        lines.append(f"{name:<{width}}  " + "  ".join(f"{key}={row[key]}" for key in STAT_KEYS))
    return lines


class View(Protocol):
    def start(self, title: str, expected_tasks: int | None) -> None: ...

    def update(self, state: RunState, event: dict[str, Any], failure: Failure | None) -> None: ...

    def note(self, text: str) -> None: ...

    def finish(self, state: RunState, summary: dict[str, Any]) -> None: ...


class QuietView:
    """Nothing at all (internal runs whose output the caller renders itself)."""

    def start(self, title: str, expected_tasks: int | None) -> None:
        return None

    def update(self, state: RunState, event: dict[str, Any], failure: Failure | None) -> None:
        return None

    def note(self, text: str) -> None:
        return None

    def finish(self, state: RunState, summary: dict[str, Any]) -> None:
        return None


class PlainView:
    """One line per play, task and host result; for logs, CI and pipes."""

    def __init__(self, stream: TextIO | None = None, show_ok: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.show_ok = show_ok
        self.expected: int | None = None
        self.t0 = time.monotonic()

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def start(self, title: str, expected_tasks: int | None) -> None:
        self.expected = expected_tasks
        self.t0 = time.monotonic()
        self._print(f"== {title}")

    def update(self, state: RunState, event: dict[str, Any], failure: Failure | None) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        elapsed = fmt_duration(time.monotonic() - self.t0)
        if kind == "playbook_on_play_start":
            self._print(f"[{elapsed}] PLAY {state.play}")
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            task = state.task
            if task is not None:
                role = f"{task.role} : " if task.role and not task.name.startswith(task.role) else ""
                self._print(f"[{elapsed}] TASK [{task_position(state, self.expected)}] {role}{task.name}")
        elif failure is not None:
            for line in failure_lines(failure):
                self._print(line)
        elif kind in ("runner_on_ok", "runner_on_failed"):
            task = state.task
            status = task.hosts.get(str(data.get("host")), "") if task else ""
            if status == "changed" or (status in ("ok", "ignored") and self.show_ok):
                duration = data.get("duration")
                took = f" ({fmt_duration(float(duration))})" if isinstance(duration, int | float) else ""
                self._print(f"  {status}: {data.get('host')}{took}")

    def note(self, text: str) -> None:
        self._print(text)

    def finish(self, state: RunState, summary: dict[str, Any]) -> None:
        for line in recap_text(state):
            self._print(line)
        self._print(
            f"{summary.get('status', '?')} in {fmt_duration(summary.get('duration_s'))}"
            f" (exit {summary.get('exit_code')}); run {summary.get('run_id')}: {summary.get('run_dir')}"
        )


class LiveView:
    """A rich live panel: play, task N of M, per-host counts, elapsed time; failures printed above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.title = ""
        self.expected: int | None = None
        self.t0 = time.monotonic()
        self.state: RunState | None = None
        self.notes: list[str] = []
        self.live = Live(console=console, refresh_per_second=4, transient=True, get_renderable=self._render)

    def start(self, title: str, expected_tasks: int | None) -> None:
        self.title = title
        self.expected = expected_tasks
        self.t0 = time.monotonic()
        self.live.start()

    def _render(self) -> Any:
        state = self.state
        elapsed = fmt_duration(time.monotonic() - self.t0)
        header = Text.assemble((self.title, "bold"), "  ", (elapsed, "cyan"))
        if state is None:
            return Panel(Group(header, Text("starting ansible-playbook ...", style="dim")))
        lines: list[Any] = [header]
        lines.append(Text.assemble(("play  ", "dim"), state.play or "-"))
        task = state.task
        if task is not None:
            role = f"{task.role} : " if task.role and not task.name.startswith(task.role) else ""
            running = ", ".join(sorted(state.running)) if state.running else ""
            took = fmt_duration(time.monotonic() - self._task_t0) if self._task_t0 else ""
            lines.append(
                Text.assemble(
                    ("task  ", "dim"),
                    (task_position(state, self.expected), "bold"),
                    "  ",
                    f"{role}{task.name}",
                    (f"  {took}" if took else "", "cyan"),
                    (f"  on {running}" if running else "", "dim"),
                )
            )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        table.add_column("host")
        for key in ("ok", "changed", "failed", "unreachable", "skipped"):
            table.add_column(key, justify="right")
        for name, counts in sorted(state.hosts.items()):
            row = counts.as_dict()
            table.add_row(
                Text(name, style="yellow" if name in state.running else ""),
                *[
                    Text(str(row[key]), style=_STATUS_STYLE[key] if row[key] else "dim")
                    for key in ("ok", "changed", "failed", "unreachable", "skipped")
                ],
            )
        lines.append(table)
        lines.extend(Text(note, style="yellow") for note in self.notes[-2:])
        return Panel(Group(*lines), border_style="blue")

    _task_t0: float | None = None

    def update(self, state: RunState, event: dict[str, Any], failure: Failure | None) -> None:
        self.state = state
        kind = event.get("event")
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self._task_t0 = time.monotonic()
        if failure is not None:
            lines = failure_lines(failure)
            body = Text("\n".join(lines[1:]))
            self.console.print(
                Panel(body, title=Text(lines[0], style="bold red"), title_align="left", border_style="red")
            )

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.console.print(Text(text, style="yellow"))

    def finish(self, state: RunState, summary: dict[str, Any]) -> None:
        self.state = state
        self.live.stop()
        self.console.print(recap_table(state, title=f"Recap: {self.title}"))
        style = "bold green" if summary.get("ok") else "bold red"
        self.console.print(
            Text.assemble(
                (f"{summary.get('status', '?')}", style),
                f" in {fmt_duration(summary.get('duration_s'))} (exit {summary.get('exit_code')}); ",
                f"{state.tasks_total} tasks; run {summary.get('run_id')}: {summary.get('run_dir')}",
            )
        )


def make_view(json_mode: bool, quiet: bool = False, stream: TextIO | None = None) -> View:
    """Live view on a terminal, plain lines otherwise; with ``--json`` the view goes to stderr."""
    if quiet:
        return QuietView()
    out = stream or (sys.stderr if json_mode else sys.stdout)
    if out.isatty():
        return LiveView(Console(file=out, stderr=out is sys.stderr))
    return PlainView(out)
