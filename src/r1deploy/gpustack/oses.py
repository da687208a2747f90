"""Operating systems the GPU stack supports, NVIDIA's repository for each, and their package names
that are not the driver's own (kernel headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from r1deploy import oses
from r1deploy.gpustack.gpus import GpuStackError


@dataclass(frozen=True)
class OsTarget:
    key: str  # "ubuntu2404", "debian12", "rhel9": NVIDIA's repository folder name too
    family: str  # "ubuntu" | "debian" | "rhel"
    pkg: str  # "apt" | "dnf"
    version: str  # "24.04" | "12" | "9"
    repo_arch: str  # "x86_64" | "sbsa"


SUPPORTED_OS = oses.describe()  # the list itself is r1deploy.oses.RELEASES
# Where driver and toolkit packages come from: the distribution's archive or NVIDIA's repository.
SOURCES = ("distro", "nvidia")


def os_target(distribution: str, version: str, architecture: str = "x86_64") -> OsTarget:
    """Map Ansible's distribution facts to a supported target, or refuse."""
    dist = (distribution or "").strip()
    ver = str(version or "").strip()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "sbsa", "arm64": "sbsa"}.get(architecture)
    if arch is None:
        raise GpuStackError(f"CPU architecture {architecture!r} is not supported (x86_64 or aarch64)")
    release = oses.find(dist, ver) if ver else None
    if release is not None:
        return OsTarget(
            release.nvidia_repo_key, release.family, release.package_manager, release.version, arch
        )
    raise GpuStackError(f"{dist} {ver} is not supported by the GPU stack roles (supported: {SUPPORTED_OS})")


def os_target_of(os_facts: Mapping[str, Any]) -> OsTarget:
    """:func:`os_target` from the role's ``{distribution, distribution_version, architecture}``."""
    return os_target(
        str(os_facts.get("distribution", "")),
        str(os_facts.get("distribution_version", "")),
        str(os_facts.get("architecture", "x86_64")),
    )


# NVIDIA's CUDA repository and its signing keys (rotated in 2022: 3bf863cc for Debian/Ubuntu,
# D42D0685 for RHEL).
NVIDIA_REPO_BASE = "https://developer.download.nvidia.com/compute/cuda/repos"
_NVIDIA_KEY = {"apt": "3bf863cc.pub", "dnf": "D42D0685.pub"}


def nvidia_repo(target: OsTarget, url: str = "", key_url: str = "") -> dict[str, str]:
    """NVIDIA's CUDA repository for this OS (``url`` and ``key_url`` override it for a local mirror)."""
    base = (url or f"{NVIDIA_REPO_BASE}/{target.key}/{target.repo_arch}/").rstrip("/") + "/"
    return {
        "name": "r1deploy-nvidia-cuda",
        "url": base,
        "key_url": key_url or base + _NVIDIA_KEY[target.pkg],
        "description": "NVIDIA CUDA repository (r1deploy)",
    }


def headers_packages_for(pkg: str, kernel: str) -> list[str]:
    """The kernel header packages DKMS builds against, for a package manager ("apt"/"dnf") and kernel.

    The first one is the package to look for (preflight's probe); dnf also needs kernel-headers.
    """
    if pkg == "apt":
        return [f"linux-headers-{kernel}"]
    if pkg == "dnf":
        return [f"kernel-devel-{kernel}", f"kernel-headers-{kernel}"]
    raise GpuStackError(f"package manager {pkg!r} is not apt or dnf")


def headers_packages(target: OsTarget, kernel: str) -> list[str]:
    return headers_packages_for(target.pkg, kernel)


def pkg_of_os_family(os_family: str) -> str:
    """Ansible's ``os_family`` ("Debian", "RedHat") -> the package manager the roles drive."""
    family = str(os_family or "").strip()
    if family == "Debian":
        return "apt"
    if family == "RedHat":
        return "dnf"
    raise GpuStackError(
        f"OS family {family!r} is not supported by the GPU stack roles (supported: {SUPPORTED_OS})"
    )
