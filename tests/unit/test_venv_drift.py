"""open_webui's venv drift check (roles/open_webui/files/r1deploy_venv_drift.py), run as the role runs
it: the venv's interpreter (here the test's own) with the lock files as arguments."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "roles/open_webui/files/r1deploy_venv_drift.py"


def drift(tmp_path: Path, *locks: str) -> subprocess.CompletedProcess[str]:
    paths = []
    for n, text in enumerate(locks):
        path = tmp_path / f"lock{n}.txt"
        path.write_text(text)
        paths.append(str(path))
    return subprocess.run([sys.executable, str(SCRIPT), *paths], capture_output=True, text=True, timeout=60)


def test_a_venv_that_matches_its_lock_prints_nothing(tmp_path: Path) -> None:
    pytest_version = importlib.metadata.version("pytest")
    yaml_version = importlib.metadata.version("PyYAML")
    lock = f"# a comment\npytest=={pytest_version}\nPyYAML=={yaml_version}  # spelled as PyPI does\n"
    result = drift(tmp_path, lock, f"pyyaml=={yaml_version}\n")  # another spelling, same project
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_every_pin_the_venv_does_not_satisfy_is_named(tmp_path: Path) -> None:
    lock = "pytest==0.0.1\nnot-a-real-package-r1deploy==1.0\n"
    result = drift(tmp_path, lock)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("Would install ") for line in lines)
    assert "not-a-real-package-r1deploy==1.0 (installed: none)" in result.stdout
    assert f"pytest==0.0.1 (installed: {importlib.metadata.version('pytest')})" in result.stdout


def test_a_pin_for_another_python_is_not_expected(tmp_path: Path) -> None:
    result = drift(tmp_path, 'async-timeout==4.0.3 ; python_version < "3.0"\n')
    assert result.returncode == 0 and result.stdout == ""


def test_an_unreadable_lock_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "missing.txt")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cannot read" in result.stderr
