"""From ansible-runner events to run state, a summary and an exit code.

Pure functions over the event dicts that ``ansible_runner``'s ``event_handler`` receives (the same
objects it writes to ``artifacts/<ident>/job_events/*.json``). Nothing here touches the runner, the
terminal or the disk, so unit tests feed recorded events straight in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

STAT_KEYS = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
# playbook_on_stats names some counters differently from the recap line.
_STATS_EVENT_KEYS = {"failed": "failures", "unreachable": "dark"}

# Failures in these files are rejections of the user's input (inventory shape, typed variables, the
# plan against the inventory or against the hosts' GPUs): exit code 2, not 1. Matched against the file
# part of a task's ``task_path``: the boilerplate play and the preflight role's refusal steps.
INPUT_CHECK_PLAYBOOKS = (
    "playbooks/boilerplate.yml",
    "roles/preflight/tasks/inventory.yml",
    "roles/preflight/tasks/check.yml",
)

STDERR_TAIL_LINES = 15

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERROR_LINE = re.compile(r"^\s*(?:\[ERROR\]|ERROR!)\s*:?\s*(.*)$")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass
class HostCounts:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    def as_dict(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in STAT_KEYS}


@dataclass
class Failure:
    host: str
    task: str
    play: str
    action: str
    path: str
    message: str
    stderr_tail: list[str]
    rc: int | None
    unreachable: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "task": self.task,
            "play": self.play,
            "action": self.action,
            "path": self.path,
            "message": self.message,
            "stderr_tail": self.stderr_tail,
            "rc": self.rc,
            "unreachable": self.unreachable,
        }

    @property
    def is_input_check(self) -> bool:
        file_part = self.path.rsplit(":", 1)[0]
        return any(file_part.endswith(p) for p in INPUT_CHECK_PLAYBOOKS)


@dataclass
class TaskRecord:
    number: int
    uuid: str
    name: str
    play: str
    role: str
    action: str
    path: str
    started: str
    start: datetime | None
    end: datetime | None = None
    hosts: dict[str, str] = field(default_factory=dict)
    host_durations: dict[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return round(max((self.end - self.start).total_seconds(), 0.0), 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.number,
            "name": self.name,
            "play": self.play,
            "role": self.role,
            "action": self.action,
            "path": self.path,
            "started": self.started,
            "duration_s": self.duration_s,
            "hosts": self.hosts,
            "host_durations_s": self.host_durations,
        }


def _result_status(event: str, data: dict[str, Any]) -> str:
    res = data.get("res") if isinstance(data.get("res"), dict) else {}
    if event == "runner_on_ok":
        return "changed" if res.get("changed") else "ok"
    if event == "runner_on_failed":
        return "ignored" if data.get("ignore_errors") else "failed"
    if event == "runner_on_unreachable":
        return "unreachable"
    if event == "runner_on_skipped":
        return "skipped"
    return event.removeprefix("runner_on_")


def _message(res: dict[str, Any]) -> str:
    """The human part of a failed result: msg, else the first failed loop item's msg, else rc/stderr."""
    if "censored" in res:
        return str(res["censored"])
    msg = res.get("msg") or res.get("message") or res.get("reason")
    if isinstance(msg, list):  # assert's fail_msg may be a list of lines
        msg = "\n".join(str(line) for line in msg)
    parts: list[str] = [str(msg)] if msg else []
    results = res.get("results")
    if isinstance(results, list):
        for item in results:
            if isinstance(item, dict) and item.get("failed"):
                item_msg = item.get("msg") or ("censored" in item and item["censored"]) or ""
                label = item.get("item", item.get("_ansible_item_label", ""))
                parts.append(f"item {label}: {item_msg}".strip())
    if not parts and res.get("rc") not in (None, 0):
        parts.append(f"non-zero return code {res.get('rc')}")
    return "\n".join(parts) if parts else "failed (no message)"


def _stderr_tail(res: dict[str, Any], lines: int = STDERR_TAIL_LINES) -> list[str]:
    collected: list[str] = []
    for source in [
        res,
        *[r for r in res.get("results", []) or [] if isinstance(r, dict) and r.get("failed")],
    ]:
        stderr = source.get("stderr_lines")
        if not isinstance(stderr, list):
            text = source.get("stderr") or source.get("module_stderr") or ""
            stderr = str(text).splitlines()
        if not stderr and source.get("failed"):
            stdout = source.get("stdout_lines")
            stderr = (
                stdout if isinstance(stdout, list) else str(source.get("module_stdout") or "").splitlines()
            )
        collected.extend(str(line) for line in stderr)
    return collected[-lines:]


@dataclass
class RunState:
    """Everything the live view and the summary need, updated one runner event at a time."""

    play: str = ""
    plays: list[dict[str, Any]] = field(default_factory=list)
    task: TaskRecord | None = None
    tasks: list[TaskRecord] = field(default_factory=list)
    hosts: dict[str, HostCounts] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # host -> task it is running
    failures: list[Failure] = field(default_factory=list)
    stats: dict[str, dict[str, int]] | None = None
    errors: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    first_created: datetime | None = None
    last_created: datetime | None = None
    events_seen: int = 0

    def host(self, name: str) -> HostCounts:
        if name not in self.hosts:
            self.hosts[name] = HostCounts()
        return self.hosts[name]

    def feed(self, event: dict[str, Any]) -> Failure | None:
        """Apply one event; return the Failure it reports, if any (so a view can print it at once)."""
        self.events_seen += 1
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        created = _parse_time(event.get("created"))
        if created is not None:
            self.first_created = self.first_created or created
            self.last_created = created
        stdout = event.get("stdout")
        if isinstance(stdout, str) and stdout:
            clean = strip_ansi(stdout)
            self.stdout.append(clean)
            if kind in ("verbose", "error", ""):
                for line in clean.splitlines():
                    match = _ERROR_LINE.match(line)
                    if match and match.group(1).strip():
                        self.errors.append(match.group(1).strip())

        if kind == "playbook_on_play_start":
            self._close_task(created)
            self.play = str(data.get("name") or data.get("play") or data.get("pattern") or "")
            self.plays.append(
                {"name": self.play, "pattern": data.get("pattern", ""), "started": event.get("created")}
            )
        elif kind == "playbook_on_task_start" or kind == "playbook_on_handler_task_start":
            self._close_task(created)
            record = TaskRecord(
                number=len(self.tasks) + 1,
                uuid=str(data.get("task_uuid") or data.get("uuid") or ""),
                name=str(data.get("task") or data.get("name") or data.get("task_action") or ""),
                play=str(data.get("play") or self.play),
                role=str(data.get("role") or ""),
                action=str(data.get("task_action") or ""),
                path=str(data.get("task_path") or ""),
                started=str(event.get("created") or ""),
                start=created,
            )
            self.tasks.append(record)
            self.task = record
        elif kind == "runner_on_start":
            host = str(data.get("host", ""))
            if host:
                self.host(host)
                self.running[host] = str(data.get("task", ""))
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            return self._host_result(kind, data, created)
        elif kind == "playbook_on_stats":
            self._close_task(created)
            self.stats = {}
            for key in STAT_KEYS:
                counts = data.get(_STATS_EVENT_KEYS.get(key, key)) or {}
                if isinstance(counts, dict):
                    self.stats[key] = {str(h): int(v) for h, v in counts.items()}
            for host in set(self.stats.get("ok", {})) | set(data.get("processed") or {}):
                self.host(str(host))
            for name, counts in self.hosts.items():
                for key in STAT_KEYS:
                    setattr(counts, key, self.stats.get(key, {}).get(name, 0))
        return None

    def _close_task(self, created: datetime | None) -> None:
        if self.task is not None and self.task.end is None:
            self.task.end = created or self.last_created
        self.running.clear()

    def _task_for(self, uuid: str) -> TaskRecord | None:
        if self.task is None or not uuid or self.task.uuid == uuid:
            return self.task
        for record in reversed(self.tasks):
            if record.uuid == uuid:
                return record
        return self.task

    def _host_result(self, kind: str, data: dict[str, Any], created: datetime | None) -> Failure | None:
        host = str(data.get("host", ""))
        status = _result_status(kind, data)
        counts = self.host(host)
        self.running.pop(host, None)
        res = data.get("res") if isinstance(data.get("res"), dict) else {}
        if status in ("ok", "changed", "ignored"):
            counts.ok += 1
        if status == "changed":
            counts.changed += 1
        elif status == "failed":
            counts.failed += 1
        elif status == "unreachable":
            counts.unreachable += 1
        elif status == "skipped":
            counts.skipped += 1
        elif status == "ignored":
            counts.ignored += 1
            if res.get("changed"):
                counts.changed += 1  # as Ansible counts an ignored failure that changed something
        task = self._task_for(str(data.get("task_uuid") or ""))
        if task is not None:
            task.hosts[host] = status
            duration = data.get("duration")
            if isinstance(duration, int | float):
                task.host_durations[host] = round(float(duration), 3)
            end = _parse_time(data.get("end")) or created
            if end is not None and (task.end is None or end > task.end):
                task.end = end
        if status not in ("failed", "unreachable"):
            return None
        failure = Failure(
            host=host,
            task=str(data.get("task") or (task.name if task else "")),
            play=str(data.get("play") or self.play),
            action=str(data.get("task_action") or ""),
            path=str(data.get("task_path") or ""),
            message=_message(res),
            stderr_tail=_stderr_tail(res) if status == "failed" else [],
            rc=res.get("rc") if isinstance(res.get("rc"), int) else None,
            unreachable=status == "unreachable",
        )
        self.failures.append(failure)
        return failure

    # ---- derived values -------------------------------------------------------------------------

    @property
    def tasks_total(self) -> int:
        return len(self.tasks)

    def elapsed_s(self) -> float | None:
        if self.first_created is None or self.last_created is None:
            return None
        return round((self.last_created - self.first_created).total_seconds(), 3)

    def final_failures(self) -> list[Failure]:
        """Failures that stood: unreachable ones, and for each host the stats count as failed, its last.

        Earlier failures of such a host, and every failure of a host that ends with no failure in the
        stats, were rescued by a block (``ignore_errors`` failures are not Failures at all). Without
        stats (an interrupted run) every failure stands.
        """
        if self.stats is None:
            return list(self.failures)
        failed_hosts = {h for h, n in self.stats.get("failed", {}).items() if n}
        last: dict[str, Failure] = {}
        for failure in self.failures:
            if not failure.unreachable and failure.host in failed_hosts:
                last[failure.host] = failure
        return [f for f in self.failures if f.unreachable or last.get(f.host) is f]

    def rescued_failures(self) -> list[Failure]:
        final = self.final_failures()
        return [f for f in self.failures if not any(f is g for g in final)]

    def totals(self) -> HostCounts:
        total = HostCounts()
        for counts in self.hosts.values():
            for key in STAT_KEYS:
                setattr(total, key, getattr(total, key) + getattr(counts, key))
        return total


def exit_code(state: RunState, runner_status: str, rc: int | None, interrupted: bool = False) -> int:
    """The CLI's exit code for a playbook run.

    130 interrupted; 3 any host unreachable (Ansible's own precedence: rc 4 beats rc 2); 2 failures
    that are all rejections by the input checks (boilerplate), or Ansible refusing to start (syntax,
    options, missing files: no play ran); 1 any other failed task, timeout or unexpected error; 0 ok.
    """
    if interrupted or runner_status == "canceled" or rc == 99:
        return EXIT_INTERRUPTED
    totals = state.totals()
    if totals.unreachable or any(f.unreachable for f in state.failures):
        return EXIT_UNREACHABLE
    # A failure later rescued by a block does not count (the final stats are authoritative).
    real_failures = [f for f in state.final_failures() if not f.unreachable]
    failed = bool(totals.failed) if state.stats is not None else bool(real_failures)
    if failed:
        if real_failures and all(f.is_input_check for f in real_failures):
            return EXIT_BAD_INPUT
        return EXIT_FAILED
    if runner_status == "successful" and rc == 0:
        return EXIT_OK
    if not state.tasks and rc in (1, 4, 5):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def status_word(code: int) -> str:
    return {
        EXIT_OK: "successful",
        EXIT_FAILED: "failed",
        EXIT_BAD_INPUT: "refused",
        EXIT_UNREACHABLE: "unreachable",
        EXIT_INTERRUPTED: "canceled",
    }.get(code, "failed")


def build_summary(
    state: RunState,
    *,
    meta: dict[str, Any],
    runner_status: str,
    rc: int | None,
    code: int,
    started: str,
    finished: str,
    duration_s: float,
) -> dict[str, Any]:
    """The run's JSON summary: what ``--json`` prints, ``summary.json`` holds and ``runs show`` replays."""
    host_stats = {name: counts.as_dict() for name, counts in sorted(state.hosts.items())}
    slowest = sorted(
        (t for t in state.tasks if t.duration_s is not None), key=lambda t: t.duration_s or 0.0, reverse=True
    )[:10]
    return {
        "schema": "r1deploy.run/1",
        **meta,
        "ok": code == 0,
        "status": status_word(code),
        "exit_code": code,
        "runner_status": runner_status,
        "ansible_rc": rc,
        "started": started,
        "finished": finished,
        "duration_s": round(duration_s, 3),
        "plays": state.plays,
        "tasks_total": state.tasks_total,
        "hosts": host_stats,
        "totals": state.totals().as_dict(),
        "failures": [f.as_dict() for f in state.final_failures()],
        "rescued_failures": [f.as_dict() for f in state.rescued_failures()],
        "errors": state.errors,
        "slowest_tasks": [{"name": t.name, "play": t.play, "duration_s": t.duration_s} for t in slowest],
        "tasks": [t.as_dict() for t in state.tasks],
    }
