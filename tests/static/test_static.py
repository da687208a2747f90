"""Static tier: linters and structural rules every role and playbook must keep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p.parent.parent for p in REPO.glob("roles/*/defaults/main.yml"))
PLAYBOOKS = sorted([REPO / "deploy.yml", *REPO.glob("playbooks/*.yml")])


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_is_clean() -> None:
    paths = ["src", "tests", "plugins", *[str(p) for p in REPO.glob("roles/*/files/*.py")]]
    paths += [str(p) for p in REPO.glob("roles/*/library/*.py")]
    result = run(str(BIN / "ruff"), "check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(str(BIN / "ruff"), "format", "--check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_is_clean() -> None:
    result = run(str(BIN / "yamllint"), "--strict", "-f", "parsable", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    result = run(str(BIN / "ansible-lint"), "--offline", "--profile", "production", "-q")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_syntax(playbook: Path) -> None:
    result = run(str(BIN / "ansible-playbook"), "--syntax-check", "-i", "inventories/sample", str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults(role: Path) -> None:
    """prometheus-community's rule: every default is documented, nothing documented is missing."""
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"].get("options", {})
    assert set(defaults) == set(options), (
        f"only in defaults: {sorted(set(defaults) - set(options))}; "
        f"only in argument_specs: {sorted(set(options) - set(defaults))}"
    )


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_public_variables_carry_the_role_prefix(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    assert all(name.startswith(role.name + "_") for name in defaults), sorted(
        n for n in defaults if not n.startswith(role.name + "_")
    )


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_a_readme(role: Path) -> None:
    readme = role / "README.md"
    assert readme.is_file(), f"{role.name} has no README.md"
    text = readme.read_text()
    for section in ("Variables", "Example"):
        assert section in text, f"{role.name}/README.md lacks a '{section}' section"


def test_unit_templates_start_with_ansible_managed() -> None:
    units = sorted(REPO.glob("roles/*/templates/*.service.j2"))
    units += sorted(REPO.glob("roles/*/templates/*.conf.j2"))
    assert units
    for unit in units:
        assert unit.read_text().startswith("{{ ansible_managed | comment }}"), unit
