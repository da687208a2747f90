#!/usr/bin/env python3
"""Write the serving venv's locks: one per (profile, Python) from the profile's top-level list.

    scripts/locks/generate.py [--profile volta] [--python 3.12]

For each profile in ``r1deploy.runtime.LOCK_PYTHONS`` it reads
``roles/vllm_runtime/files/locks/<profile>.in`` (a few top-level requirements), asks pip's resolver
what it would install on every supported OS that uses that Python (``pip install --dry-run --report``
for manylinux x86_64 up to the OS's glibc, wheels only, nothing installed), checks that every OS got
the same versions, drops the packages the profile must never install (``#! exclude:`` lines), and
writes ``<profile>-py3XX.txt``: every package pinned, with the sha256 of every wheel file the OSes
would pick. The header records the sha256 of the ``.in`` file (tests/static/test_locks.py compares).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from r1deploy import runtime  # noqa: E402

LOCK_DIR = ROOT / "roles/vllm_runtime/files/locks"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]


def read_inputs(profile: str) -> tuple[str, list[str], set[str]]:
    """The .in file's text, its requirement lines and its excluded package names."""
    text = (LOCK_DIR / f"{profile}.in").read_text()
    requirements, excluded = [], set()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#! exclude:"):
            excluded.update(canonical(n) for n in line.split(":", 1)[1].split())
        elif line and not line.startswith("#"):
            requirements.append(line)
    return text, requirements, excluded


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_platform_args(python: str, glibc: tuple[int, int]) -> list[str]:
    """pip's cross-target options: CPython X.Y, every manylinux tag the OS's glibc accepts."""
    args = ["--python-version", python, "--implementation", "cp"]
    args += ["--abi", f"cp{python.replace('.', '')}", "--abi", "abi3", "--abi", "none"]
    for minor in range(glibc[1], 16, -1):
        args += ["--platform", f"manylinux_2_{minor}_x86_64"]
    return [*args, "--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64", "--platform", "any"]


def resolve(requirements: list[str], python: str, glibc: tuple[int, int], extra: list[str]) -> dict[str, Pin]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
        argv += ["--only-binary=:all:", "--report", str(report), "--target", str(Path(tmp) / "t")]
        argv += pip_platform_args(python, glibc) + extra + requirements
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "is ignored" not in line]
            raise SystemExit(
                f"pip could not resolve {requirements} for Python {python}:\n" + "\n".join(errors[-15:])
            )
        data = json.loads(report.read_text())
    pins = {}
    for item in data["install"]:
        meta, info = item["metadata"], item["download_info"]
        digest = (info.get("archive_info") or {}).get("hashes", {}).get("sha256") or file_sha256(info["url"])
        pins[canonical(meta["name"])] = Pin(meta["name"], meta["version"], frozenset({digest}))
    return pins


def file_sha256(url: str) -> str:
    """Hash of a wheel pip found in a local find-links folder (the report has none for those)."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise SystemExit(f"pip's report has no sha256 for {url}")
    return hashlib.sha256(Path(unquote(parsed.path)).read_bytes()).hexdigest()


def merge(per_os: dict[str, dict[str, Pin]], python: str) -> dict[str, Pin]:
    """One pin set for every OS of this Python (same versions; hashes of each OS's wheel file)."""
    merged: dict[str, Pin] = {}
    for os_name, pins in per_os.items():
        for key, pin in pins.items():
            seen = merged.get(key)
            if seen is None:
                merged[key] = pin
            elif seen.version != pin.version:
                raise SystemExit(
                    f"Python {python}: {pin.name} resolves to {seen.version} on one OS "
                    f"and {pin.version} on {os_name}"
                )
            else:
                merged[key] = Pin(seen.name, seen.version, seen.hashes | pin.hashes)
    return merged


def render(
    profile: str, python: str, inputs: str, pins: dict[str, Pin], excluded: set[str], oses: list[str]
) -> str:
    digest = hashlib.sha256(inputs.encode()).hexdigest()
    lines = [
        f"# Lock of the '{profile}' serving venv for CPython {python}, manylinux x86_64 ({', '.join(oses)}).",
        f"# Generated by scripts/locks/generate.py from {profile}.in (sha256 {digest}); do not edit.",
        "# Installed with pip --no-deps --only-binary=:all: (hash-checking: every wheel's sha256 is below).",
    ]
    if excluded:
        lines.append(f"# Left out on purpose (see {profile}.in): {', '.join(sorted(excluded))}")
    for key in sorted(pins):
        if key in excluded:
            continue
        pin = pins[key]
        hashes = " ".join(f"--hash=sha256:{h}" for h in sorted(pin.hashes))
        lines.append(f"{pin.name}=={pin.version} {hashes}")
    return "\n".join(lines) + "\n"


def generate(profile: str, python: str, extra: list[str]) -> Path:
    inputs, requirements, excluded = read_inputs(profile)
    targets = runtime.oses_for_python(python)
    per_os = {name: resolve(requirements, python, glibc, extra) for name, glibc in targets.items()}
    pins = merge(per_os, python)
    missing = [r for r in requirements if canonical(re.split(r"[\[=<>!~ ;]", r, maxsplit=1)[0]) not in pins]
    if missing:
        raise SystemExit(
            f"{profile} Python {python}: top-level requirements not in the resolution: {missing}"
        )
    path = LOCK_DIR / runtime.lock_name(profile, python)
    path.write_text(render(profile, python, inputs, pins, excluded, list(targets)))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(runtime.LOCK_PYTHONS), action="append")
    parser.add_argument("--python", action="append", help="e.g. 3.12 (default: every Python of the profile)")
    parser.add_argument(
        "--find-links",
        action="append",
        default=[],
        help="extra wheel folder or index page (the cpu profile's torch==X+cpu: a local wheelhouse "
        "or https://download.pytorch.org/whl/cpu via --extra-index-url in PIP_EXTRA_INDEX_URL)",
    )
    args = parser.parse_args()
    extra = [arg for link in args.find_links for arg in ("--find-links", link)]
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    for profile in args.profile or sorted(runtime.LOCK_PYTHONS):
        for python in runtime.LOCK_PYTHONS[profile]:
            if args.python and python not in args.python:
                continue
            print(f"{profile} {python}: {generate(profile, python, extra).relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
