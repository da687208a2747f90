"""Running playbooks through ansible-runner, the way ansible-navigator does.

``execute`` starts ``ansible_runner.run_async`` in a fresh private data directory (``mkdtemp``, 0700,
deleted afterwards), receives every event through ``event_handler`` into a queue (the events are not
written to that directory: the handler returns False), and on the main thread scrubs each event,
applies it to a :class:`~r1deploy.events.RunState`, appends it to the run folder and updates the
view. Ctrl-C sends SIGINT to ansible-playbook (Ansible stops cleanly); a second Ctrl-C, or no exit
within the grace period, cancels through runner's ``cancel_callback`` (runner kills the job).

The ansible-playbook command line is built here and handed to runner verbatim (the private data
dir's ``args`` file), so it is exactly what an operator would type; it holds paths only. Variables the
CLI itself passes (never secrets) go in a 0600 file inside the private dir, referenced as ``-e @file``.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from r1deploy import __version__
from r1deploy.events import EXIT_BAD_INPUT, RunState, build_summary, exit_code
from r1deploy.progress import QuietView, View
from r1deploy.runs import EVENTS, STDOUT, SUMMARY, RunFolder, new_run, previous_task_count
from r1deploy.secrets import Scrubber, scrubber_for

# Seconds ansible-playbook gets to stop after SIGINT before runner kills it.
INTERRUPT_GRACE_S = 15.0
# How often runner's pexpect loop wakes up to ask ``cancel_callback`` (runner's default is 5 s).
PEXPECT_TIMEOUT_S = 0.5


class BadInput(Exception):
    """The request cannot run (missing playbook/inventory, inline secrets...): exit code 2."""


def project_dir() -> Path:
    """The r1deploy checkout (``playbooks/``, ``roles/``, ``ansible.cfg``).

    ``$R1DEPLOY_ROOT``, else the nearest folder above the working directory, else above this file.
    """
    env = os.environ.get("R1DEPLOY_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd(), Path(__file__).resolve()):
        for candidate in (start, *start.parents):
            if (candidate / "playbooks" / "site.yml").is_file() and (candidate / "ansible.cfg").is_file():
                return candidate
    raise BadInput("cannot find the r1deploy checkout (playbooks/site.yml): run from it or set R1DEPLOY_ROOT")


def resolve_playbook(name: str, root: Path | None = None) -> Path:
    """A path as given, else ``playbooks/NAME`` or ``playbooks/NAME.yml`` of the checkout."""
    given = Path(name).expanduser()
    if given.is_file():
        return given.resolve()
    base = (root or project_dir()) / "playbooks"
    for candidate in (base / name, base / f"{name}.yml"):
        if candidate.is_file():
            return candidate.resolve()
    raise BadInput(f"playbook not found: {name} (neither a file nor playbooks/{name}[.yml])")


def resolve_inventory(path: str | os.PathLike[str]) -> Path:
    inventory = Path(path).expanduser()
    if not inventory.exists():
        raise BadInput(f"inventory not found: {inventory}")
    return inventory.resolve()


@dataclass
class RunRequest:
    command: str
    playbooks: list[Path]
    inventory: Path
    limit: str | None = None
    tags: str | None = None
    skip_tags: str | None = None
    check: bool = False
    diff: bool = False
    extra_var_files: list[Path] = field(default_factory=list)
    extravars: dict[str, Any] = field(default_factory=dict)
    vault_ids: list[str] = field(default_factory=list)
    vault_password_files: list[str] = field(default_factory=list)
    forks: int | None = None
    verbosity: int = 0
    argv: list[str] = field(default_factory=list)
    record: bool = True
    # Inventory values of play-keyword variables (r1deploy_gpu_reboot_batch): None = read them.
    inventory_keywords: dict[str, Any] | None = None

    def plan_key(self) -> str:
        """Runs with the same key run the same tasks: the previous one's count is this one's estimate."""
        key = json.dumps(
            [
                [p.name for p in self.playbooks],
                str(self.inventory),
                self.limit,
                self.tags,
                self.skip_tags,
                self.check,
                sorted(self.extravars),
            ]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class RunResult:
    exit_code: int
    summary: dict[str, Any]
    state: RunState
    run: RunFolder | None


def ansible_playbook_argv(
    request: RunRequest, extravars_file: Path | None = None, keywords_file: Path | None = None
) -> list[str]:
    """The ansible-playbook command line for a request (paths only, never a secret value).

    ``keywords_file`` (inventory values of play-keyword variables) comes before the user's ``-e``
    files, so an operator's own extra variables still win.
    """
    argv = ["ansible-playbook", "-i", str(request.inventory)]
    if request.limit:
        argv += ["--limit", request.limit]
    if request.tags:
        argv += ["--tags", request.tags]
    if request.skip_tags:
        argv += ["--skip-tags", request.skip_tags]
    if request.check:
        argv.append("--check")
    if request.diff:
        argv.append("--diff")
    if request.forks:
        argv += ["--forks", str(request.forks)]
    for vault_id in request.vault_ids:
        argv += ["--vault-id", vault_id]
    for vault_file in request.vault_password_files:
        argv += ["--vault-password-file", vault_file]
    if keywords_file is not None:
        argv += ["-e", f"@{keywords_file}"]
    for path in request.extra_var_files:
        argv += ["-e", f"@{path}"]
    if extravars_file is not None:
        argv += ["-e", f"@{extravars_file}"]
    if request.verbosity:
        argv.append("-" + "v" * request.verbosity)
    argv += [str(p) for p in request.playbooks]
    return argv


def _ansible_cfg(root: Path) -> Path | None:
    env = os.environ.get("ANSIBLE_CONFIG")
    if env:
        return Path(env)
    cfg = root / "ansible.cfg"
    return cfg if cfg.is_file() else None


def runner_envvars(root: Path) -> dict[str, str]:
    """Environment for ansible-playbook on top of ours (no secrets).

    - PATH starts with this interpreter's bin folder, so the ansible-playbook of the same install runs;
    - ANSIBLE_CONFIG names the checkout's ansible.cfg (runner's cwd is the checkout anyway);
    - ANSIBLE_HOST_KEY_CHECKING is set from that ansible.cfg, because runner forces it to False when
      the environment does not set it, which would silently turn off the project's host key checks.
    """
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cfg = _ansible_cfg(root)
    if cfg is not None and "ANSIBLE_CONFIG" not in os.environ:
        env["ANSIBLE_CONFIG"] = str(cfg)
    if "ANSIBLE_HOST_KEY_CHECKING" not in os.environ:
        checking = "True"
        if cfg is not None:
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            with contextlib.suppress(configparser.Error, OSError):
                parser.read(cfg)
                checking = parser.get("defaults", "host_key_checking", fallback="True")
        env["ANSIBLE_HOST_KEY_CHECKING"] = checking
    return env


def _versions() -> dict[str, str]:
    out = {"r1deploy": __version__, "python": sys.version.split()[0]}
    for dist in ("ansible-core", "ansible-runner"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _children_running(name: str) -> list[int]:
    """PIDs of our direct children whose command line mentions ``name`` (what runner spawned)."""
    me = os.getpid()
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if name in cmdline:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def _interrupts_counted(interrupts: list[float]) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM (CI timeouts, systemd) append their time to ``interrupts`` instead of
    raising: a KeyboardInterrupt raised between two statements of the event loop (its `while` test,
    `thread.join()`) would leave runner's thread and ansible-playbook running, the process unable to
    exit until the play ends (seen in CI: a Ctrl-C during a minute-long task went unanswered)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        interrupts.append(time.monotonic())

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Recorder:
    """Writes scrubbed events and output into the run folder as they come."""

    def __init__(self, run: RunFolder | None) -> None:
        self.run = run
        self.handle = run.open_append(EVENTS) if run else None

    def event(self, event: dict[str, Any]) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(event, default=str) + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def execute(
    request: RunRequest,
    view: View | None = None,
    *,
    root: Path | None = None,
    scrubber: Scrubber | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run the request's playbooks; return the exit code, the summary and the final state."""
    root = root or project_dir()
    view = view or QuietView()
    for playbook in request.playbooks:
        if not playbook.is_file():
            raise BadInput(f"playbook not found: {playbook}")
    if not request.inventory.exists():
        raise BadInput(f"inventory not found: {request.inventory}")
    for path in request.extra_var_files:
        if not path.is_file():
            raise BadInput(f"extra-vars file not found: {path}")
    from r1deploy import inventory_input  # imports this module: late, to avoid the cycle

    inventory_input.check_files(request.inventory)
    if request.inventory_keywords is None:
        request.inventory_keywords = inventory_input.play_keyword_vars(request.inventory)
    scrub = scrubber or scrubber_for(
        request.inventory, vault_specs=[*request.vault_ids, *request.vault_password_files]
    )

    run = new_run() if request.record else None
    run_id = run.id if run else datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    private = Path(tempfile.mkdtemp(prefix="r1deploy-run-"))
    os.chmod(private, 0o700)
    try:
        return _execute(request, view, root, scrub, on_event, run, run_id, private)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _private_json(path: Path, data: dict[str, Any]) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    return path


def _execute(
    request: RunRequest,
    view: View,
    root: Path,
    scrub: Scrubber,
    on_event: Callable[[dict[str, Any]], None] | None,
    run: RunFolder | None,
    run_id: str,
    private: Path,
) -> RunResult:
    """The run itself, inside ``execute``'s fresh private data dir (which it removes afterwards)."""
    import ansible_runner  # imported late: ~0.2 s that `--help` and `runs` need not pay
    from ansible_runner.exceptions import ConfigurationError

    extravars_file: Path | None = None
    if request.extravars:
        extravars_file = _private_json(private / "extravars.json", request.extravars)
    keywords_file: Path | None = None
    if request.inventory_keywords:
        keywords_file = _private_json(private / "inventory-keywords.json", request.inventory_keywords)
    argv = ansible_playbook_argv(request, extravars_file, keywords_file)
    shown_argv = [a.replace(str(private), "<private-data-dir>") for a in argv]
    meta: dict[str, Any] = {
        "run_id": run_id,
        "run_dir": str(run.path) if run else None,
        "command": request.command,
        "playbooks": [
            str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in request.playbooks
        ],
        "inventory": str(request.inventory),
        "limit": request.limit,
        "tags": request.tags,
        "skip_tags": request.skip_tags,
        "check": request.check,
        "diff": request.diff,
        "plan_key": request.plan_key(),
    }
    if run is not None:
        run.write_json(
            "command.json",
            scrub(
                {
                    "argv": ["r1deploy", *request.argv],
                    "ansible_playbook": shown_argv,
                    "cwd": str(Path.cwd()),
                    "project_dir": str(root),
                    "user": os.environ.get("USER", ""),
                    "host": socket.gethostname(),
                    "started": _now_iso(),
                    "versions": _versions(),
                    "extravars": request.extravars,
                    "inventory_keywords": request.inventory_keywords or {},
                }
            ),
        )

    events: queue.Queue[dict[str, Any]] = queue.Queue()
    cancel = threading.Event()
    state = RunState()
    recorder = _Recorder(run)
    interrupted = False
    started_iso = _now_iso()
    t0 = time.monotonic()

    def handle_event(event: dict[str, Any]) -> bool:
        events.put(event)
        return False  # runner keeps nothing on disk; the run folder gets the scrubbed copy

    def process(event: dict[str, Any]) -> None:
        clean = scrub(event)
        failure = state.feed(clean)
        recorder.event(clean)
        if on_event is not None:
            on_event(clean)
        view.update(state, clean, failure)

    try:
        (private / "args").write_text(shlex.join(argv))
        os.chmod(private / "args", 0o600)
        try:
            thread, runner = ansible_runner.run_async(
                private_data_dir=str(private),
                ident=run_id,
                project_dir=str(root),
                envvars=runner_envvars(root),
                event_handler=handle_event,
                cancel_callback=cancel.is_set,
                quiet=True,
                # Keep ansible.cfg's fact cache: runner would point it into the temp dir.
                fact_cache_type="none",
                settings={"pexpect_timeout": PEXPECT_TIMEOUT_S, "suppress_output_file": True},
            )
        except ConfigurationError as exc:
            if run is not None:
                shutil.rmtree(run.path, ignore_errors=True)
            raise BadInput(f"ansible-runner refused the run: {exc}") from exc
        view.start(
            f"r1deploy {request.command}: {' + '.join(p.name for p in request.playbooks)}",
            previous_task_count(meta["plan_key"]) if request.record else None,
        )
        deadline: float | None = None
        interrupts: list[float] = []
        handled = 0
        with _interrupts_counted(interrupts):
            while thread.is_alive() or not events.empty():
                with contextlib.suppress(queue.Empty):
                    process(events.get(timeout=0.1))
                if deadline is not None and time.monotonic() > deadline and not cancel.is_set():
                    view.note("ansible-playbook did not stop in time: killing it")
                    cancel.set()
                if len(interrupts) > handled:
                    handled = len(interrupts)
                    if not interrupted:
                        interrupted = True
                        deadline = time.monotonic() + INTERRUPT_GRACE_S
                        view.note("interrupted: stopping ansible-playbook (Ctrl-C again to kill it now)")
                        for pid in _children_running("ansible-playbook"):
                            with contextlib.suppress(OSError):
                                os.kill(pid, signal.SIGINT)
                    elif not cancel.is_set():
                        view.note("killing ansible-playbook")
                        cancel.set()
            thread.join()
        runner_status = str(runner.status)
        rc = runner.rc if isinstance(runner.rc, int) else None
    finally:
        recorder.close()

    code = exit_code(state, runner_status, rc, interrupted=interrupted)
    if runner_status == "failed" and not state.tasks and not state.errors:
        # Ansible refused before any play: its message is in the plain output.
        state.errors.extend(line.strip() for line in "".join(state.stdout).splitlines() if line.strip())
    summary = build_summary(
        state,
        meta=meta,
        runner_status=runner_status,
        rc=rc,
        code=code,
        started=started_iso,
        finished=_now_iso(),
        duration_s=time.monotonic() - t0,
    )
    summary = scrub(summary)
    if run is not None:
        run.write_json(SUMMARY, summary)
        (run.path / STDOUT).touch(mode=0o600)
        with run.open_append(STDOUT) as handle:
            handle.write("\n".join(state.stdout) + "\n")
    view.finish(state, summary)
    return RunResult(code, summary, state, run)


def bad_input_summary(command: str, message: str) -> dict[str, Any]:
    return {
        "schema": "r1deploy.run/1",
        "command": command,
        "ok": False,
        "status": "refused",
        "exit_code": EXIT_BAD_INPUT,
        "errors": [message],
    }
