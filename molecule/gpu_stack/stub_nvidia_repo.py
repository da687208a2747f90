"""A signed, flat apt repository standing in for NVIDIA's CUDA repository, which CI cannot reach.

It has NVIDIA's layout (Packages, Release, InRelease at the top, ``Suites: /``) and a few packages
named as NVIDIA's, each an empty stub saying so in its description, at NVIDIA's version strings:

* ``cuda-drivers-580`` (proprietary) and ``nvidia-open-580`` (open): the role must pick one by flavour
  and pin the other away;
* ``cuda-toolkit-12-8`` with a stub ``/usr/local/cuda-12.8/bin/nvcc`` that prints its version, so the
  PATH set in profile.d can be checked; ``cuda-toolkit-13-0`` too;
* ``libnccl2``/``libnccl-dev`` 2.21.5-1+cuda12.8 and the newer 2.28.9-1+cuda13.0: the pin must keep
  the CUDA 12 build.

    python stub_nvidia_repo.py OUT_DIR      # writes OUT_DIR/{*.deb,Packages,Release,InRelease,key.gpg}
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STUBS: list[tuple[str, str, dict[str, str]]] = [
    ("cuda-drivers-580", "580.95.05-1", {}),
    ("nvidia-open-580", "580.95.05-1", {}),
    ("cuda-toolkit-12-8", "12.8.93-1", {"usr/local/cuda-12.8/bin/nvcc": "12.8"}),
    ("cuda-toolkit-13-0", "13.0.88-1", {"usr/local/cuda-13.0/bin/nvcc": "13.0"}),
    ("libnccl2", "2.21.5-1+cuda12.8", {}),
    ("libnccl-dev", "2.21.5-1+cuda12.8", {}),
    ("libnccl2", "2.28.9-1+cuda13.0", {}),
    ("libnccl-dev", "2.28.9-1+cuda13.0", {}),
]

NVCC = """#!/bin/sh
# r1deploy test stub of NVIDIA's nvcc: prints a version, compiles nothing.
echo "nvcc: NVIDIA (R) Cuda compiler driver (r1deploy stub)"
echo "Cuda compilation tools, release {release}, V{release}.0"
"""


def build_deb(work: Path, out: Path, name: str, version: str, files: dict[str, str]) -> Path:
    root = work / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: r1deploy tests <tests@r1deploy.invalid>\n"
        f"Description: r1deploy test stub of NVIDIA's {name}\n"
        " Empty stand-in used by the gpu_stack Molecule scenario; NVIDIA's repository is unreachable in CI.\n"
    )
    for rel, release in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(NVCC.format(release=release))
        path.chmod(0o755)
    deb = out / f"{name}_{version.replace(':', '%3a')}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def packages_index(out: Path) -> str:
    """The Packages index (what dpkg-scanpackages writes), from dpkg-deb alone."""
    stanzas = []
    for deb in sorted(out.glob("*.deb")):
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True)
        data = deb.read_bytes()
        extra = (
            f"Filename: ./{deb.name}\nSize: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
        stanzas.append(control.stdout.rstrip("\n") + "\n" + extra)
    return "\n".join(stanzas)


def release_file(out: Path) -> str:
    lines = [
        "Origin: r1deploy stub of NVIDIA CUDA",
        "Label: r1deploy-nvidia-stub",
        "Architectures: amd64 all",
        "Date: Thu, 01 Jan 2026 00:00:00 UTC",
    ]
    for algo, field in (("md5", "MD5Sum"), ("sha256", "SHA256")):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (out / name).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def sign(out: Path, work: Path) -> None:
    home = work / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [
            *gpg,
            "--quick-generate-key",
            "r1deploy stub repo <stub@r1deploy.invalid>",
            "rsa2048",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*gpg, "--yes", "--clearsign", "-o", str(out / "InRelease"), str(out / "Release")],
        check=True,
        capture_output=True,
    )
    subprocess.run([*gpg, "--yes", "--export", "-o", str(out / "key.gpg")], check=True, capture_output=True)


def build(out: Path) -> Path:
    if (out / "InRelease").exists():
        return out
    tmp_out = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp_out, ignore_errors=True)
    tmp_out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as work:
        for name, version, files in STUBS:
            build_deb(Path(work), tmp_out, name, version, files)
        index = packages_index(tmp_out)
        (tmp_out / "Packages").write_text(index)
        (tmp_out / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))
        (tmp_out / "Release").write_text(release_file(tmp_out))
        sign(tmp_out, Path(work))
    shutil.rmtree(out, ignore_errors=True)
    tmp_out.rename(out)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]).resolve()))
