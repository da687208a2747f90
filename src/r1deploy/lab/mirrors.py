"""Offline mirrors for one lab, bound only to its cluster network's gateway address.

* apt: Debian's apt-cacher-ng, URL form ``http://GW:3142/deb.debian.org/debian``. It fetches from the
  controller's own Debian mirror (any component: main, contrib, non-free, non-free-firmware) and keeps a
  per-lab-name cache under ~/.cache/r1deploy so a re-created lab installs offline-fast.
* pip: the wheelhouse folder served by Python's http.server; its directory listing is a valid pip
  ``--find-links`` page.

Each lab runs its own pair (pidfiles in the lab's state folder), so ``lab down`` stops exactly what its
``up`` started and one lab's restart never breaks another's downloads. This is the same mechanism an
air-gapped site uses (docs/runbooks/lab.md, "Offline mirrors").
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from r1deploy.lab import procs
from r1deploy.lab.image import SOURCES_FILES, debian_mirror
from r1deploy.lab.paths import LabError, cache_dir

APT_PORT = 3142
PIP_PORT = 3143
APT_PATH = "deb.debian.org/debian"
SECURITY_PATH = "deb.debian.org/debian-security"


@dataclass(frozen=True)
class MirrorUrls:
    apt: str
    apt_security: str
    pip_find_links: str


def urls(gateway: str) -> MirrorUrls:
    return MirrorUrls(
        apt=f"http://{gateway}:{APT_PORT}/{APT_PATH}",
        apt_security=f"http://{gateway}:{APT_PORT}/{SECURITY_PATH}",
        pip_find_links=f"http://{gateway}:{PIP_PORT}/",
    )


def security_mirror(sources: tuple[Path, ...] = SOURCES_FILES) -> str:
    return debian_mirror(sources, security=True)


def acng_config(gateway: str, state: Path, cache: Path, upstream: str, security: str) -> str:
    """apt-cacher-ng config: one bind address, explicit upstreams (the controller's own mirrors)."""
    return "\n".join(
        [
            "# Written by `r1deploy lab up`; removed by `lab down`.",
            f"CacheDir: {cache}",
            f"LogDir: {state}",
            "SupportDir: /usr/lib/apt-cacher-ng",
            f"Port: {APT_PORT}",
            f"BindAddress: {gateway}",
            f"PidFile: {state / 'acng.pid'}",
            f"SocketPath: {state / 'acng.socket'}",
            "ForeGround: 1",
            # Clients ask for /deb.debian.org/debian/...; every component passes through.
            f"Remap-debrep: {APT_PATH} ; {upstream}/",
            f"Remap-secdeb: {SECURITY_PATH} security.debian.org/debian-security ; {security}/",
            "ExThreshold: 4",
            "ReportPage: acng-report.html",
            "",
        ]
    )


def ensure(name: str, gateway: str, state: Path, wheelhouse: Path) -> MirrorUrls:
    """Start (or keep) this lab's apt and pip mirrors on ``gateway``; wait until both accept connections."""
    acng = shutil.which("apt-cacher-ng")
    if acng is None:
        raise LabError(
            "`apt-cacher-ng` is not installed: run scripts/bootstrap.sh (apt-get install apt-cacher-ng)"
        )
    conf_dir = state / "acng"
    conf_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir() / "apt-cacher-ng" / name
    cache.mkdir(parents=True, exist_ok=True)
    conf = acng_config(gateway, conf_dir, cache, debian_mirror(), security_mirror())
    conf_file = conf_dir / "acng.conf"
    if not conf_file.exists() or conf_file.read_text() != conf:
        procs.stop(state / "apt-mirror.pid", str(conf_dir))  # the gateway changed: restart
        conf_file.write_text(conf)
    if procs.running(state / "apt-mirror.pid", str(conf_dir)) is None:
        procs.start([acng, "-c", str(conf_dir)], state / "apt-mirror.pid", state / "apt-mirror.log")

    pip_argv = [
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        gateway,
        "--directory",
        str(wheelhouse),
        str(PIP_PORT),
    ]
    pip_pid = procs.running(state / "pip-mirror.pid", "http.server")
    if pip_pid is not None and procs.cmdline(pip_pid)[1:] != pip_argv[1:]:
        procs.stop(state / "pip-mirror.pid", "http.server")  # new gateway or wheelhouse
        pip_pid = None
    if pip_pid is None:
        procs.start(pip_argv, state / "pip-mirror.pid", state / "pip-mirror.log")

    for port, log in ((APT_PORT, state / "apt-mirror.log"), (PIP_PORT, state / "pip-mirror.log")):
        _wait_port(gateway, port, log)
    return urls(gateway)


def stop(state: Path) -> list[str]:
    """Stop this lab's mirror processes; returns what was stopped."""
    stopped = []
    if procs.stop(state / "apt-mirror.pid", str(state / "acng")):
        stopped.append("apt mirror (apt-cacher-ng)")
    if procs.stop(state / "pip-mirror.pid", "http.server"):
        stopped.append("pip mirror (http.server)")
    return stopped


def running(state: Path) -> dict[str, int | None]:
    return {
        "apt": procs.running(state / "apt-mirror.pid", str(state / "acng")),
        "pip": procs.running(state / "pip-mirror.pid", "http.server"),
    }


def _wait_port(host: str, port: int, log: Path, wait_s: float = 15) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:]) if log.exists() else ""
    raise LabError(
        f"mirror on {host}:{port} did not start: {tail or 'no output'}\n"
        f"fix: free port {port} on {host} (another process bound 0.0.0.0:{port}?) "
        "and run `r1deploy lab up` again"
    )
