#!/usr/bin/env python3
"""Which GPU architectures a lock's CUDA wheels carry kernels for (SASS and PTX), read from the binaries.

    scripts/sm_arch_report.py roles/vllm_runtime/files/locks/volta-py312.txt [--require sm_70]

Downloads (``pip download --no-deps``, into ``.cache/sm-arch/``, outside git) the wheels of the lock
that carry CUDA extension libraries (vllm, torch by default) and NVIDIA's ``cuobjdump`` from the PyPI
wheel ``nvidia-cuda-cuobjdump``, unpacks every ``.so`` of the wheels, and lists, per library, the
architectures of its embedded cubins (``--list-elf``: SASS, runs as is) and PTX (``--list-ptx``: JIT-
compiled by the driver for newer GPUs only). With ``--require sm_70`` it exits 1 unless every named
package has at least one library with that SASS. Output: a Markdown table (docs/locks.md has one).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "sm-arch"
DEFAULT_PACKAGES = ("vllm", "torch")
CUOBJDUMP_WHEEL = "nvidia-cuda-cuobjdump==13.5.37"
ARCH = re.compile(r"\.(sm_\d+[a-z]?)\.(?:cubin|ptx)")


@dataclass
class Library:
    wheel: str
    path: str
    sass: dict[str, int] = field(default_factory=dict)  # arch -> number of cubins
    ptx: dict[str, int] = field(default_factory=dict)


def lock_pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def lock_python(lock: Path) -> str:
    match = re.search(r"-py3(\d+)\.txt$", lock.name)
    return f"3.{match.group(1)}" if match else f"{sys.version_info[0]}.{sys.version_info[1]}"


def download(requirements: list[str], python: str, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    argv += ["--python-version", python, "--implementation", "cp", "-d", str(dest)]
    for minor in range(31, 16, -1):
        argv += ["--platform", f"manylinux_2_{minor}_x86_64"]
    argv += ["--platform", "manylinux2014_x86_64", *requirements]
    subprocess.run(argv, check=True)
    wheels = []
    for requirement in requirements:
        name, version = requirement.split("==")
        stem = f"{re.sub(r'[-.]+', '_', name)}-{version}-".lower()
        found = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(stem))
        if not found:
            raise SystemExit(f"pip download did not leave a wheel for {requirement} in {dest}")
        wheels.append(found[-1])
    return wheels


def cuobjdump() -> Path:
    tool = CACHE / "tools" / "nvidia" / "cu13" / "bin" / "cuobjdump"
    if not tool.exists():
        (wheel,) = download([CUOBJDUMP_WHEEL], "3.12", CACHE / "tools")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract("nvidia/cu13/bin/cuobjdump", CACHE / "tools")
        tool.chmod(0o755)
    return tool


def count_arches(listing: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for arch in ARCH.findall(listing):
        counts[arch] = counts.get(arch, 0) + 1
    return counts


def scan_wheel(wheel: Path, tool: Path) -> list[Library]:
    target = CACHE / "unpacked" / wheel.stem
    libraries = []
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if re.search(r"\.so(\.\d+)*$", m)]
        for member in members:
            path = target / member
            if not path.exists():
                zf.extract(member, target)
            elf = subprocess.run([tool, "--list-elf", path], capture_output=True, text=True)
            ptx = subprocess.run([tool, "--list-ptx", path], capture_output=True, text=True)
            library = Library(wheel.name, member, count_arches(elf.stdout), count_arches(ptx.stdout))
            if library.sass or library.ptx:
                libraries.append(library)
    return libraries


def ptxas(wheel: Path) -> str:
    """Triton compiles kernels with the ptxas it bundles: its CUDA release decides the oldest GPU."""
    member = "triton/backends/nvidia/bin/ptxas"
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            return ""
        path = Path(zf.extract(member, CACHE / "unpacked" / wheel.stem))
    path.chmod(0o755)
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    release = re.search(r"release (\d+\.\d+)", version)
    return f"; bundled ptxas: CUDA {release.group(1)}" if release else ""


def sort_key(arch: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", arch)
    return int(digits or 0), arch


def fmt(counts: dict[str, int]) -> str:
    return " ".join(f"{a}({counts[a]})" for a in sorted(counts, key=sort_key)) or "-"


def report(lock: Path, libraries: list[Library], python: str) -> str:
    lines = [
        f"Lock `{lock.relative_to(ROOT) if lock.is_relative_to(ROOT) else lock}` (CPython {python}), "
        f"read with cuobjdump from `{CUOBJDUMP_WHEEL}`; arch(number of cubins or PTX files).",
        "",
        "| wheel | library | SASS (cubins) | PTX |",
        "|---|---|---|---|",
    ]
    for lib in libraries:
        lines.append(
            f"| {' '.join(lib.wheel.split('-')[:2])} | `{lib.path}` | {fmt(lib.sass)} | {fmt(lib.ptx)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("lock", type=Path)
    parser.add_argument(
        "--package", action="append", help=f"wheel to read (default: {', '.join(DEFAULT_PACKAGES)})"
    )
    parser.add_argument("--require", help="exit 1 unless every package has SASS for this arch, e.g. sm_70")
    args = parser.parse_args()
    lock = args.lock.resolve()
    pins = lock_pins(lock)
    packages = args.package or list(DEFAULT_PACKAGES)
    missing = [p for p in packages if p not in pins]
    if missing:
        raise SystemExit(f"{lock} pins none of: {', '.join(missing)}")
    python = lock_python(lock)
    tool = cuobjdump()
    wheels = download([f"{p}=={pins[p]}" for p in packages], python, CACHE / "wheels")
    libraries = [lib for wheel in wheels for lib in scan_wheel(wheel, tool)]
    print(report(lock, libraries, python))
    readers = {w.name for w in wheels} - {lib.wheel for lib in libraries}
    for wheel in sorted((w for w in wheels if w.name in readers), key=lambda w: w.name):
        label = " ".join(wheel.name.split("-")[:2])
        print(f"\n{label}: no prebuilt kernels (compiles them at run time){ptxas(wheel)}")
    if args.require:
        lacking = [
            p
            for p, w in zip(packages, wheels, strict=True)
            if w.name not in readers
            and not any(args.require in lib.sass for lib in libraries if lib.wheel == w.name)
        ]
        verdict = (
            "every package with prebuilt kernels has it"
            if not lacking
            else f"MISSING in {', '.join(lacking)}"
        )
        print(f"\n{args.require} SASS: {verdict}")
        return 1 if lacking else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
