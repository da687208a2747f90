"""The serving venv's locks: every lock installs on every supported OS that uses it, and matches its inputs.

Resolution is pip's own, metadata only (``pip install --dry-run --no-deps --only-binary=:all:`` for the
lock's CPython and the manylinux tags of the OS's glibc, nothing downloaded but index pages and wheel
metadata). It needs PyPI; the cpu lock's ``torch==X+cpu`` comes from the pip config's find-links (this
machine's wheel folder) or PyTorch's CPU index. The time is written to test-artifacts/locks.json.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from r1deploy import runtime

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "roles/vllm_runtime/files/locks"
ARTIFACTS = REPO / "test-artifacts"
CHUNK = 70  # requirement lines per pip run: pip waits on the network, so runs go in parallel
PARALLEL = 6
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_targets() -> dict[str, tuple[str, tuple[int, int], list[str]]]:
    """Each lock the role can install: (Python, the lowest glibc among its OSes, those OSes).

    A wheel that installs with the lowest glibc installs with every newer one, so that is the strict test.
    """
    targets = {}
    for profile, pythons in runtime.LOCK_PYTHONS.items():
        for python in pythons:
            oses = runtime.oses_for_python(python)
            targets[runtime.lock_name(profile, python)] = (python, min(oses.values()), sorted(oses))
    return targets


def pip_dry_run(lines: list[str], python: str, glibc: tuple[int, int]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("\n".join(lines) + "\n")
        argv = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--no-deps",
        ]
        argv += ["--only-binary=:all:", "--disable-pip-version-check", "--target", str(Path(tmp) / "t")]
        argv += ["--python-version", python, "--implementation", "cp"]
        for minor in range(glibc[1], 16, -1):
            argv += ["--platform", f"manylinux_2_{minor}_x86_64"]
        argv += ["--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64", "--platform", "any"]
        return subprocess.run([*argv, "-r", str(requirements)], capture_output=True, text=True)


def pins(lock: Path) -> list[str]:
    """``name==version`` of every line (hashes left out: checking them would download every wheel)."""
    return [m.group(0) for line in lock.read_text().splitlines() if (m := PIN.match(line))]


def lines_with_hashes(lock: Path) -> list[str]:
    return [line.strip() for line in lock.read_text().splitlines() if PIN.match(line.strip())]


def layers(pinned: list[str]) -> list[list[str]]:
    """Split pins so no pip run asks for two versions of one package (pip would call that a conflict)."""
    result: list[list[str]] = []
    for pin in pinned:
        name = canonical(pin.split("==")[0])
        layer = next(
            (group for group in result if name not in {canonical(p.split("==")[0]) for p in group}), None
        )
        if layer is None:
            result.append(layer := [])
        layer.append(pin)
    return result


@pytest.fixture(scope="module")
def resolutions() -> dict[str, list[str]]:
    """Every lock resolved at once; lock name -> pip's errors (empty: it installs).

    A pin whose wheel hashes are the same in several locks is one file (pure Python or abi3): it is asked
    once, for the oldest Python and glibc among those locks; the others once per (Python, glibc). Runs go
    in parallel chunks (pip mostly waits on the network).
    """
    users: dict[str, list[str]] = {}
    for name in lock_targets():
        if (LOCKS / name).is_file():
            for line in lines_with_hashes(LOCKS / name):
                users.setdefault(line, []).append(name)
    owners: dict[tuple[str, tuple[int, int]], dict[str, list[str]]] = {}
    for line, names in users.items():
        python = min((lock_targets()[n][0] for n in names), key=lambda v: tuple(map(int, v.split("."))))
        glibc = min(lock_targets()[n][1] for n in names)
        owners.setdefault((python, glibc), {}).setdefault(line.split(" ")[0], []).extend(names)
    jobs = []
    for (python, glibc), pinned in owners.items():
        for lines in layers(sorted(pinned)):
            jobs += [(lines[i : i + CHUNK], python, glibc) for i in range(0, len(lines), CHUNK)]
    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda job: (job, pip_dry_run(*job)), jobs))
    elapsed = time.monotonic() - started
    errors: dict[str, list[str]] = {name: [] for name in lock_targets()}
    for (lines, python, glibc), result in results:
        if result.returncode == 0:
            continue
        where = f"[CPython {python}, manylinux_2_{glibc[1]}] "
        message = [where + line for line in result.stderr.splitlines() if line.startswith("ERROR")] or [
            f"{where}pip exited {result.returncode}"
        ]
        named = [pin for pin in lines if pin in "\n".join(message)]
        for pin in named or lines:  # pip stops at its first error: blame the pins it names
            for name in owners[(python, glibc)][pin]:
                errors[name].extend(message)
    ARTIFACTS.mkdir(exist_ok=True)
    report = {
        "locks_resolve_s": round(elapsed, 1),
        "pip_runs": len(jobs),
        "pins": sum(map(len, owners.values())),
    }
    (ARTIFACTS / "locks.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresolved {len(errors)} locks in {elapsed:.1f} s: {report['pins']} pins, {len(jobs)} pip runs")
    return errors


@pytest.mark.parametrize("lock", sorted(lock_targets()))
def test_lock_installs_on_every_os_that_uses_it(lock: str, resolutions: dict[str, list[str]]) -> None:
    python, glibc, oses = lock_targets()[lock]
    assert (LOCKS / lock).is_file(), f"{lock} is missing: run scripts/locks/generate.py"
    assert resolutions[lock] == [], (
        f"{lock} cannot install with CPython {python} on glibc {glibc[0]}.{glibc[1]} ({', '.join(oses)}):\n"
        + "\n".join(resolutions[lock])
        + "\nfix: regenerate it (scripts/locks/generate.py) or change the profile's .in"
    )


def test_every_lock_file_is_one_the_role_can_choose() -> None:
    assert sorted(p.name for p in LOCKS.glob("*.txt")) == sorted(lock_targets())


def test_the_role_has_a_lock_for_every_supported_os_it_offers() -> None:
    """lock_matrix is what the role picks per (profile, OS): every row names an existing lock."""
    for profile, os_name, python in runtime.lock_matrix():
        assert (LOCKS / runtime.lock_name(profile, python)).is_file(), (profile, os_name, python)
    assert {(p, o) for p, o, _ in runtime.lock_matrix() if p != "cpu"} == {
        (p, t.name) for p in ("volta", "cuda") for t in runtime.OS_TARGETS
    }


@pytest.mark.parametrize("lock", sorted(lock_targets()))
def test_lock_was_generated_from_its_inputs(lock: str) -> None:
    """The header carries the .in file's sha256; every top-level pin is in the lock, excluded ones are not."""
    profile = lock.split("-py")[0]
    inputs = (LOCKS / f"{profile}.in").read_text()
    text = (LOCKS / lock).read_text()
    digest = hashlib.sha256(inputs.encode()).hexdigest()
    assert f"from {profile}.in (sha256 {digest})" in text, (
        f"{profile}.in changed: run scripts/locks/generate.py"
    )
    pinned = {canonical(n): v for n, v in (p.split("==", 1) for p in pins(LOCKS / lock))}
    for line in inputs.splitlines():
        if line.startswith("#! exclude:"):
            assert not set(map(canonical, line.split(":", 1)[1].split())) & set(pinned)
        elif line.strip() and not line.startswith("#"):
            name, version = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line.strip()).groups()
            assert pinned.get(canonical(name)) == version, f"{lock}: {line} is not pinned as {version}"
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(" --hash=sha256:" in line for line in body), f"{lock}: every pin carries its wheels' sha256"
