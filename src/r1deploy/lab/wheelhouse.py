"""The lab's Python wheelhouse: every pinned wheel the hosts install, downloaded once on the controller.

It is keyed by a hash of the requirement locks and the controller's Python/platform (the lab's hosts run
the same Debian 12 Python 3.11), and served as a ``--find-links`` page by :mod:`r1deploy.lab.mirrors`.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from r1deploy.lab.paths import LabError, cache_dir

LOCKS = (
    "roles/vllm_runtime/files/locks/cpu-py311.txt",
    "roles/open_webui/files/requirements.txt",
)
DONE_MARKER = ".complete"


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    files: int
    bytes: int
    built_s: float | None  # None when it came from the cache


def lock_files(root: Path) -> list[Path]:
    paths = [root / rel for rel in LOCKS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LabError(f"requirement locks missing: {', '.join(missing)} (they are part of the checkout)")
    return paths


def wheelhouse_key(locks: list[Path], python_tag: str | None = None) -> str:
    """Hash of the locks' content plus interpreter and platform (wheels are specific to both)."""
    digest = hashlib.sha256()
    digest.update((python_tag or f"cp{sys.version_info[0]}{sys.version_info[1]}").encode())
    digest.update(sysconfig.get_platform().encode())
    for lock in locks:
        digest.update(lock.name.encode() + b"\0" + lock.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_wheelhouse(root: Path, log: Callable[[str], None] = print) -> Wheelhouse:
    locks = lock_files(root)
    base = cache_dir() / "wheelhouse"
    base.mkdir(parents=True, exist_ok=True)
    target = base / wheelhouse_key(locks)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel labs share one download
        built_s = None
        if not (target / DONE_MARKER).exists():
            built_s = _download(locks, target, log)
    files = [p for p in target.iterdir() if p.is_file() and not p.name.startswith(".")]
    return Wheelhouse(target, len(files), sum(p.stat().st_size for p in files), built_s)


def _download(locks: list[Path], target: Path, log: Callable[[str], None]) -> float:
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(exist_ok=True)  # kept between attempts: pip skips files already there
    log(f"building the wheelhouse {target} from {', '.join(p.name for p in locks)} (once per lock change)")
    started = time.monotonic()
    # One pip run per lock: they pin different versions of shared packages (separate venvs on the hosts).
    for lock in locks:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        result = subprocess.run([*argv, "-d", str(partial), "-r", str(lock)], capture_output=True, text=True)
        if result.returncode != 0:
            tail = "\n".join(line for line in result.stderr.strip().splitlines() if "ignored" not in line)
            raise LabError(
                f"pip download of {lock} for the wheelhouse failed:\n{tail[-2000:]}\n"
                "fix: the lock must resolve from PyPI or the pip config's find-links (torch==2.13.0+cpu)"
            )
    sdists = sorted(p.name for p in partial.iterdir() if not p.name.endswith(".whl"))
    if sdists:
        log(f"note: the wheelhouse holds source distributions (hosts must build them): {', '.join(sdists)}")
    if target.exists():
        shutil.rmtree(target)
    (partial / DONE_MARKER).write_text("")
    partial.rename(target)
    return time.monotonic() - started
