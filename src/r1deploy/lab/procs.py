"""Background processes the lab owns (dockerd, mirrors), tracked by pidfiles.

A pidfile alone can point at a recycled pid, so every check also matches the process's command line
against what we started: ``stop`` never signals a process we did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and its command line contains ``marker``."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    argv = cmdline(pid)
    if not argv or not any(marker in part for part in argv):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


def start(argv: Sequence[str], pidfile: Path, logfile: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session, so it outlives the CLI), output to ``logfile``."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            list(argv),
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    # /proc/PID/cmdline can read empty for a moment after exec; callers check it right away.
    deadline = time.monotonic() + 2
    while not cmdline(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.pid


def stop(pidfile: Path, marker: str, timeout: float = 15.0) -> bool:
    """SIGTERM (then SIGKILL) the process ``pidfile`` names if it is ours; True if one was stopped."""
    pid = running(pidfile, marker)
    stopped = False
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running(pidfile, marker) is not None and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if running(pidfile, marker) is not None:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        _reap(pid)
        stopped = True
    pidfile.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    # When this process started it (same session as a test), collect the zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
