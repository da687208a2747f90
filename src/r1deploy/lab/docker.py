"""The one boundary to Docker: the ``docker`` CLI (no SDK), and starting ``dockerd`` when none answers."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from r1deploy.lab import procs
from r1deploy.lab.paths import LabError, state_dir

# Debian's client matches Debian's dockerd 20.10; a newer client in /usr/local/bin also works
# (it negotiates the API down) but is only the fallback.
CLIENT_CANDIDATES = ("/usr/bin/docker",)
CAP_SYS_RESOURCE = 24
WRAPPER_RUNTIME = "r1deploy-runc"


class Docker:
    """Runs ``docker ARGS``; tests replace it with a fake that records calls."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or _find_client()

    def run(
        self,
        args: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 600,
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *args]
        try:
            result = subprocess.run(
                argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"`docker {' '.join(args[:3])} ...` did not finish in {timeout}s") from exc
        if check and result.returncode != 0:
            raise LabError(_explain(args, result.stderr.strip() or result.stdout.strip()))
        return result

    def ok(self, args: Sequence[str], timeout: float | None = 30) -> bool:
        return self.run(args, check=False, timeout=timeout).returncode == 0


def _find_client() -> str:
    for candidate in CLIENT_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("docker")
    if not found:
        raise LabError("no `docker` client found: install Debian's docker.io (scripts/bootstrap.sh does)")
    return found


def _explain(args: Sequence[str], stderr: str) -> str:
    msg = f"`docker {' '.join(args[:4])}` failed: {stderr}"
    if "unable to apply caps" in stderr:
        msg += (
            "\nfix: this kernel's capability bounding set lacks CAP_SYS_RESOURCE and the running dockerd "
            "does not use r1deploy's runtime wrapper; stop that dockerd and let `r1deploy lab up` start one"
        )
    return msg


def bounding_set_lacks(cap: int, status: str | None = None) -> bool:
    """True when ``CapBnd`` in /proc/self/status has bit ``cap`` clear."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith("CapBnd:"):
            return not (int(line.split()[1], 16) >> cap) & 1
    return False


def dockerd_argv(state: Path, wrapper: Path | None) -> list[str]:
    """dockerd for the lab: no IP forwarding or masquerading, so containers cannot route out."""
    argv = [
        "dockerd",
        "--pidfile",
        str(state / "dockerd.pid"),
        "--ip-forward=false",
        "--ip-masq=false",
    ]
    if wrapper is not None:
        argv += ["--add-runtime", f"{WRAPPER_RUNTIME}={wrapper}", "--default-runtime", WRAPPER_RUNTIME]
    return argv


def install_wrapper(state: Path) -> Path:
    """Copy the runtime wrapper into the state folder (dockerd needs a stable executable path)."""
    source = Path(__file__).with_name("runc_wrapper.py").read_text()
    target = state / "runc-wrapper"
    if not target.exists() or target.read_text() != source:
        tmp = target.with_suffix(".tmp")
        tmp.write_text(source)
        tmp.chmod(0o755)
        tmp.replace(target)
    return target


def ensure_engine(docker: Docker, wait_s: float = 60) -> str:
    """Use the engine that answers (honours DOCKER_HOST), else start dockerd; returns a one-line note."""
    if docker.ok(["info"]):
        return "docker engine: already running"
    if os.environ.get("DOCKER_HOST"):
        raise LabError(
            f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer `docker info`: "
            "start that engine, or unset DOCKER_HOST to let r1deploy start a local dockerd"
        )
    if shutil.which("dockerd") is None:
        raise LabError("no docker engine answers and `dockerd` is not installed: install docker.io")
    if os.geteuid() != 0:
        raise LabError("no docker engine answers; starting dockerd needs root: run as root or start Docker")
    state = state_dir()
    # Several engineers may bring labs up at once: one of them starts dockerd.
    with open(state / "dockerd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if docker.ok(["info"]):
            return "docker engine: already running"
        wrapper = install_wrapper(state) if bounding_set_lacks(CAP_SYS_RESOURCE) else None
        log = state / "dockerd.log"
        procs.start(dockerd_argv(state, wrapper), state / "dockerd.launcher.pid", log)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if docker.ok(["info"], timeout=10):
                how = " with the CAP_SYS_RESOURCE runtime wrapper" if wrapper else ""
                return f"docker engine: started dockerd{how} (log {log})"
            time.sleep(0.5)
    raise LabError(f"dockerd did not answer within {wait_s:.0f}s: see {log}")
