"""The lab's host image: Debian 12 with systemd and sshd, built with debootstrap (no registry).

The tag carries a hash of the recipe, so a changed recipe builds a new image and an unchanged one is
reused. GPU-stack Molecule scenarios call :func:`ensure_image` to run on the same image.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1deploy.lab.docker import Docker
from r1deploy.lab.paths import LabError, state_dir

IMAGE_REPO = "r1deploy-lab-host"
SOURCES_FILES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
FALLBACK_MIRROR = "http://deb.debian.org/debian"
FALLBACK_SECURITY = "http://deb.debian.org/debian-security"

# Timers and gettys do nothing useful in a container and keep systemd from settling.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
    "console-getty.service",
    "getty.target",
    "systemd-remount-fs.service",
)

# Each sshd container makes its own host keys on first boot (an image must not share them).
HOSTKEYS_UNIT = """\
[Unit]
Description=Generate SSH host keys on first boot (r1deploy lab)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
# ed25519 only: an RSA key takes seconds of CPU per container on a busy 2-core machine.
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
RequiredBy=ssh.service
"""

SSHD_CONFIG = """\
# r1deploy lab: key-only logins as the ansible user; one ed25519 host key, made at first boot.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
"""

CUSTOMISE_SCRIPT = """\
set -eu
useradd --create-home --shell /bin/bash ansible
install -d -m 0700 -o ansible -g ansible /home/ansible/.ssh
echo 'ansible ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/ansible
chmod 0440 /etc/sudoers.d/ansible
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/log/*.log
"""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content; its hash is the image tag."""

    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = (
        "systemd",
        "systemd-sysv",
        "dbus",
        "openssh-server",
        "python3",
        "python3-apt",
        "sudo",
        "iproute2",
        "procps",
        "ca-certificates",
    )
    masked: tuple[str, ...] = MASKED_UNITS
    files: dict[str, str] = field(
        default_factory=lambda: {
            "etc/systemd/system/r1deploy-ssh-hostkeys.service": HOSTKEYS_UNIT,
            "etc/ssh/sshd_config.d/r1deploy-lab.conf": SSHD_CONFIG,
        }
    )
    script: str = CUSTOMISE_SCRIPT
    dockerfile_tail: tuple[str, ...] = (
        'CMD ["/lib/systemd/systemd"]',
        "STOPSIGNAL SIGRTMIN+3",
        "ENV container=docker",
    )

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def tag(self) -> str:
        return f"{IMAGE_REPO}:{self.digest()}"


def debian_mirror(sources: tuple[Path, ...] = SOURCES_FILES, *, security: bool = False) -> str:
    """The machine's Debian mirror (deb822 ``URIs:`` or a one-line ``deb`` entry): the main archive,
    or with ``security`` the security archive; the public default when the files name none."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in _uris(text):
            if uri.rstrip("/").endswith("-security") == security:
                return uri.rstrip("/")
    return FALLBACK_SECURITY if security else FALLBACK_MIRROR


def _uris(text: str) -> list[str]:
    found: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("URIs:"):
            found += line.split()[1:]
        elif line.startswith("deb "):
            parts = [p for p in line.split()[1:] if not p.startswith("[")]
            if parts:
                found.append(parts[0])
    return found


def image_exists(docker: Docker, tag: str) -> bool:
    return docker.ok(["image", "inspect", tag])


def ensure_image(
    docker: Docker | None = None,
    recipe: Recipe | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Return the tag of the lab host image, building it first if this recipe has no image yet."""
    docker = docker or Docker()
    recipe = recipe or Recipe()
    tag = recipe.tag()
    if image_exists(docker, tag):
        return tag
    with open(state_dir() / "image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another lab may be building the same image
        if not image_exists(docker, tag):
            build_image(docker, recipe, log)
    return tag


def build_image(docker: Docker, recipe: Recipe, log: Callable[[str], None] = print) -> None:
    if shutil.which("debootstrap") is None:
        raise LabError(
            "`debootstrap` is not installed: run scripts/bootstrap.sh (apt-get install debootstrap)"
        )
    mirror = debian_mirror()
    tag = recipe.tag()
    started = time.monotonic()
    log(f"building {tag} with debootstrap from {mirror} (about 90 s, once per recipe)")
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=state_dir()) as tmp:
        root = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                f"--variant={recipe.variant}",
                f"--include={','.join(recipe.packages)}",
                recipe.suite,
                str(root),
                mirror,
            ],
            "debootstrap",
        )
        customise(root, recipe)
        base = f"{tag}-base"
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([docker.binary, "import", "-", base], stdin=tar.stdout, capture_output=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise LabError(f"docker import of the rootfs failed: {imported.stderr.decode().strip()}")
    # dockerd 20.10 refuses STOPSIGNAL in `import --change`: add it with an offline, context-less build.
    dockerfile = "\n".join(
        [f"FROM {base}", *recipe.dockerfile_tail, f"LABEL r1deploy.recipe={recipe.digest()}", ""]
    )
    docker.run(["build", "-q", "-t", tag, "-"], input=dockerfile)
    docker.run(["image", "rm", base], check=False)
    log(f"built {tag} in {time.monotonic() - started:.0f}s")


def customise(root: Path, recipe: Recipe) -> None:
    for rel, content in recipe.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    wants = root / "etc/systemd/system/ssh.service.requires"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "r1deploy-ssh-hostkeys.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/r1deploy-ssh-hostkeys.service")
    for unit in recipe.masked:
        target = root / "etc/systemd/system" / unit
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/null")
    _run(["chroot", str(root), "/bin/sh", "-c", recipe.script], "image customisation")


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LabError(f"{what} failed (exit {result.returncode}):\n{tail}")
