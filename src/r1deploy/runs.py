"""Run folders: one per CLI run under the user's state directory, listed and replayed by ``r1deploy runs``.

Layout of ``<state>/runs/<id>/`` (folder 0700, files 0600)::

    command.json   argv, playbooks, inventory, options, versions (no secrets: paths only)
    events.jsonl   the runner's events, one JSON object a line, scrubbed
    stdout.txt     Ansible's own output assembled from the events, scrubbed, no colour codes
    summary.json   hosts, stats, failures, per-task durations, status, exit code

The id is the UTC start time (``20260129T190115Z``), with ``-2``, ``-3``... when two runs start in the
same second.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS_SUBDIR = "runs"
DEFAULT_KEEP = 200
SUMMARY = "summary.json"
COMMAND = "command.json"
EVENTS = "events.jsonl"
STDOUT = "stdout.txt"


def state_dir() -> Path:
    """``$R1DEPLOY_STATE_DIR``, else ``$XDG_STATE_HOME/r1deploy``, else ``~/.local/state/r1deploy``."""
    env = os.environ.get("R1DEPLOY_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "r1deploy"


def runs_dir() -> Path:
    return state_dir() / RUNS_SUBDIR


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


@dataclass
class RunFolder:
    id: str
    path: Path

    def write_json(self, name: str, data: Any) -> None:
        _write_private(self.path / name, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")

    def open_append(self, name: str) -> Any:
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def summary(self) -> dict[str, Any] | None:
        try:
            data = self.read_json(SUMMARY)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def command(self) -> dict[str, Any] | None:
        try:
            data = self.read_json(COMMAND)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def events(self) -> Iterator[dict[str, Any]]:
        path = self.path / EVENTS
        if not path.exists():
            return
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line:
                    yield json.loads(line)


def new_run(root: Path | None = None, now: float | None = None, keep: int | None = None) -> RunFolder:
    """Create a fresh private run folder; rotate old ones beyond ``keep`` (``$R1DEPLOY_KEEP_RUNS``)."""
    root = root or runs_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    for n in range(1, 1000):
        run_id = stamp if n == 1 else f"{stamp}-{n}"
        path = root / run_id
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)
        _rotate(
            root, keep if keep is not None else int(os.environ.get("R1DEPLOY_KEEP_RUNS", DEFAULT_KEEP)), path
        )
        return RunFolder(run_id, path)
    raise RuntimeError(f"cannot create a run folder under {root}")


def _rotate(root: Path, keep: int, current: Path) -> None:
    if keep <= 0:
        return
    folders = sorted((p for p in root.iterdir() if p.is_dir() and p != current), key=_sort_key)
    excess = len(folders) + 1 - keep
    for old in folders[: max(excess, 0)]:
        shutil.rmtree(old, ignore_errors=True)


def _sort_key(path: Path) -> tuple[str, int]:
    stamp, _, n = path.name.partition("-")
    return stamp, int(n) if n.isdigit() else 1


def list_runs(root: Path | None = None) -> list[RunFolder]:
    """All run folders, newest first."""
    root = root or runs_dir()
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir()]
    return [RunFolder(p.name, p) for p in sorted(folders, key=_sort_key, reverse=True)]


def find_run(ref: str, root: Path | None = None) -> RunFolder | None:
    """A run by id, unique id prefix, ``last``/``latest``, or ``-N`` (N-th newest, ``-1`` = last)."""
    runs = list_runs(root)
    if not runs:
        return None
    if ref in ("last", "latest"):
        return runs[0]
    if ref.startswith("-") and ref[1:].isdigit():
        index = int(ref[1:]) - 1
        return runs[index] if 0 <= index < len(runs) else None
    exact = [r for r in runs if r.id == ref]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.id.startswith(ref)]
    return matches[0] if len(matches) == 1 else None


def previous_task_count(key: str, root: Path | None = None) -> int | None:
    """Tasks seen by the newest finished run with the same ``plan_key`` (playbooks, tags, limit, check)."""
    for run in list_runs(root):
        summary = run.summary()
        if not summary or summary.get("plan_key") != key:
            continue
        if summary.get("status") == "successful" and isinstance(summary.get("tasks_total"), int):
            return int(summary["tasks_total"])
    return None
