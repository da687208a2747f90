"""The lab's SSH trust: a per-lab client key and a known_hosts file read from the containers themselves."""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import time
from pathlib import Path

from r1deploy.lab.docker import Docker
from r1deploy.lab.model import Host
from r1deploy.lab.paths import LabError

AUTHORIZED_KEYS = "/home/ansible/.ssh/authorized_keys"


def ensure_key(path: Path, comment: str) -> Path:
    """An ed25519 key pair at ``path`` (0600, no passphrase: the lab is throwaway and local)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )
    path.chmod(0o600)
    return path


def authorize(docker: Docker, container: str, public_key: str) -> None:
    script = (
        f"cat > {AUTHORIZED_KEYS} && chown ansible:ansible {AUTHORIZED_KEYS} && chmod 0600 {AUTHORIZED_KEYS}"
    )
    docker.run(["exec", "-i", container, "sh", "-c", script], input=public_key)


def wait_for_host_keys(docker: Docker, container: str, wait_s: float = 180) -> list[str]:
    """Public host keys of ``container`` once sshd is up (the keys are made on first boot)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if docker.ok(["exec", container, "systemctl", "is-active", "--quiet", "ssh"]):
            out = docker.run(["exec", container, "sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"]).stdout
            keys = [line.strip() for line in out.splitlines() if line.strip()]
            if keys:
                return keys
        time.sleep(0.5)
    raise LabError(
        f"sshd did not come up in {container} within {wait_s:.0f}s:\n{_diagnose(docker, container)}\n"
        f"see `docker exec {container} journalctl -b`"
    )


def _diagnose(docker: Docker, container: str) -> str:
    script = (
        "echo system: $(systemctl is-system-running); echo ssh: $(systemctl is-active ssh); "
        "systemctl list-jobs --no-legend | head -5; journalctl -b --no-pager -n 15"
    )
    result = docker.run(["exec", container, "sh", "-c", script], check=False, timeout=30)
    return (result.stdout + result.stderr).strip()


def known_hosts_lines(host: Host, keys: list[str]) -> list[str]:
    names = ",".join(n for n in (host.cluster_ip, host.public_ip, host.name) if n)
    lines = []
    for key in keys:
        parts = key.split()
        if len(parts) >= 2:
            lines.append(f"{names} {parts[0]} {parts[1]}")
    return lines


def write_known_hosts(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(0o600)


def close_control_masters(control_dir: Path) -> int:
    """Ask each SSH multiplexing master under ``control_dir`` (Ansible's, for this lab) to exit."""
    closed = 0
    for sock in glob.glob(str(control_dir / "*")):
        result = subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab-host"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        closed += result.returncode == 0
        # The master may remove its socket itself between the check and the unlink (seen in CI).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
    return closed
