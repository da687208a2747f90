"""The operating system releases r1deploy supports: the one list that preflight (os-unsupported), the
GPU stack (NVIDIA's repository, package manager) and the serving venv (which Python, which lock) read.

Adding a release here is the whole claim; ``tests/static/test_locks.py`` then demands a lock resolved
for its Python, and the GPU stack's unit tests its repository and package names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    name: str  # how messages and docs say it: "Ubuntu 22.04", "EL 9"
    distributions: tuple[str, ...]  # ansible_distribution values
    version: str  # "22.04" (major.minor must match) or "12", "9" (any point release of the major)
    family: str  # "ubuntu" | "debian" | "rhel": NVIDIA's repository folder is family + version digits
    glibc: tuple[int, int]  # what pip's platform tags must allow (locks are resolved against it)
    # The Pythons the OS packages: its own python3 first when vLLM accepts it, then its others. Rocky/RHEL
    # 9's python3 is 3.9 (too old): python3.12 from AppStream (3.11 there ends its life in 2026; 3.12 is
    # Ubuntu 24.04's too, so mixed EL 9/Ubuntu 24.04 clusters share it). Ubuntu 22.04's python3 is 3.10;
    # python3.11 (universe) serves profiles without a 3.10 lock (cpu).
    pythons: tuple[str, ...]

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    @property
    def debian_family(self) -> bool:
        return self.family in ("ubuntu", "debian")

    @property
    def package_manager(self) -> str:
        return "apt" if self.debian_family else "dnf"

    @property
    def nvidia_repo_key(self) -> str:
        """NVIDIA's CUDA repository folder: ubuntu2204, ubuntu2404, debian12, rhel9."""
        return self.family + self.version.replace(".", "")

    def matches(self, distribution: str, version: str) -> bool:
        """Ansible's distribution and distribution_version (or major version) name this release."""
        if str(distribution).strip() not in self.distributions:
            return False
        parts = str(version).strip().split(".")
        if parts[0] != self.major:
            return False
        # Ubuntu's minor is the release (22.04 vs 22.10); a bare major ("22") is taken as the LTS.
        return "." not in self.version or len(parts) == 1 or ".".join(parts[:2]) == self.version


RELEASES: tuple[Release, ...] = (
    Release("Debian 12", ("Debian",), "12", "debian", (2, 36), ("3.11",)),
    Release("Ubuntu 22.04", ("Ubuntu",), "22.04", "ubuntu", (2, 35), ("3.10", "3.11")),
    Release("Ubuntu 24.04", ("Ubuntu",), "24.04", "ubuntu", (2, 39), ("3.12",)),
    Release("EL 9", ("Rocky", "RedHat", "AlmaLinux"), "9", "rhel", (2, 34), ("3.12", "3.11")),
)


def find(distribution: str, version: str) -> Release | None:
    """The supported release these facts name, or None."""
    return next((r for r in RELEASES if r.matches(distribution, version)), None)


def supported_versions() -> dict[str, list[str]]:
    """{ansible_distribution: [versions]}: preflight's default table (preflight_supported_os overrides)."""
    table: dict[str, list[str]] = {}
    for release in RELEASES:
        for distribution in release.distributions:
            table.setdefault(distribution, []).append(release.version)
    return table


def describe() -> str:
    """One line for messages: "Debian 12, Ubuntu 22.04, Ubuntu 24.04, EL 9 (Rocky, RedHat, AlmaLinux)"."""
    return ", ".join(
        r.name + (f" ({', '.join(r.distributions)})" if len(r.distributions) > 1 else "") for r in RELEASES
    )
