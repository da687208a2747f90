"""Static tier: linters and structural rules every role and playbook must keep."""

from __future__ import annotations

import re
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
    options = next(iter(specs["argument_specs"].values())).get("options", {})
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


# ---- one home per shared value and rule (issue 13) ----------------------------------------------------
# A literal of a shared value outside its home is a second copy: change the home and that copy silently
# splits the cluster. Each value names its home files and, in ALLOWED, the copies that exist today (the
# issue-13 backlog): the test refuses every new copy, and refuses a listed file that no longer holds the
# literal, so the lists only shrink. Files scanned: roles/ and playbooks/ (YAML, templates, READMEs,
# scripts).

SCANNED_SUFFIXES = {".yml", ".yaml", ".j2", ".md", ".py", ".sh", ".cfg"}


def _tree_files() -> list[Path]:
    files = [REPO / "deploy.yml", *REPO.glob("playbooks/**/*"), *REPO.glob("roles/**/*")]
    return sorted(p for p in files if p.is_file() and p.suffix in SCANNED_SUFFIXES)


def _home(role: str) -> set[str]:
    """A role's own declaration of a value: its defaults, argument specs and the README table."""
    return {
        f"roles/{role}/defaults/main.yml",
        f"roles/{role}/meta/argument_specs.yml",
        f"roles/{role}/README.md",
    }


SHARED_VALUES: dict[str, tuple[str, set[str], set[str]]] = {
    # name: (pattern, home files, today's copies (issue 13), each file relative to the repository)
    "Ray GCS port 6667": (
        r"\b6667\b",
        _home("r1deploy"),
        {
            # Prose: the source template's command line (`ray start --head --port=6667`) and port tables.
            "roles/ray_head/README.md",
            "roles/ray_head/defaults/main.yml",
            "roles/ray_worker/README.md",
        },
    ),
    "vLLM API port 8000": (
        r"\b8000\b",
        _home("r1deploy"),
        {
            # Prose: the port tables of the roles' READMEs.
            "roles/firewall/README.md",
            "roles/ray_head/README.md",
            "roles/vllm_server/README.md",
        },
    ),
    "serving venv /opt/r1deploy/venv": (
        r"/opt/r1deploy/venv\b",
        _home("r1deploy"),
        {
            # Prose.
            "roles/vllm_runtime/README.md",
            # issue 13: the diagnose script's fallback when called without the venv argument
            "playbooks/files/r1deploy-diagnose-host.sh",
        },
    ),
    "service home /var/lib/r1deploy": (
        r"/var/lib/r1deploy\b",
        _home("vllm_runtime"),
        {
            # issue 13: unit templates and vllm_server re-type vllm_runtime_home
            "roles/ray_head/templates/ray-head.service.j2",
            "roles/ray_worker/templates/ray-worker.service.j2",
            "roles/vllm_server/README.md",
            "roles/vllm_server/defaults/main.yml",
            "roles/vllm_server/meta/argument_specs.yml",
            # issue 13: copies written by this session's day-2, firewall and serving work in parallel
            "playbooks/files/r1deploy-diagnose-host.sh",
            "roles/firewall/README.md",
            "roles/firewall/vars/main.yml",
            "roles/ray_head/README.md",
            "roles/ray_head/defaults/main.yml",
            "roles/ray_head/meta/argument_specs.yml",
            "roles/ray_head/templates/_hardening.j2",
            "roles/ray_worker/README.md",
            "roles/ray_worker/defaults/main.yml",
            "roles/ray_worker/meta/argument_specs.yml",
            "roles/ray_worker/templates/_hardening.j2",
            "roles/vllm_server/templates/_hardening.j2",
        },
    ),
    "model root /srv/models": (
        r"/srv/models\b",
        _home("r1deploy"),
        {
            # Prose: what the model role puts where.
            "roles/model/README.md",
            # reset's guard: never remove the models' parent folder itself, whatever the variables say.
            "playbooks/reset.yml",
        },
    ),
}


@pytest.mark.parametrize("value", SHARED_VALUES, ids=lambda v: v.split()[0] + "-" + v.split()[1])
def test_no_new_copy_of_a_shared_value(value: str) -> None:
    pattern, home, allowed = SHARED_VALUES[value]
    regex = re.compile(pattern)
    holders = {str(p.relative_to(REPO)) for p in _tree_files() if regex.search(p.read_text(errors="replace"))}
    assert home & holders, f"{value}: its home {sorted(home)} no longer declares it; update SHARED_VALUES"
    new = sorted(holders - home - allowed)
    assert not new, (
        f"{value} is typed again in {new}: read it from its home ({sorted(home)}) through the variable, "
        "not as a literal"
    )
    gone = sorted(allowed - holders)
    assert not gone, f"{value}: {gone} no longer hold a copy: remove them from the allow-list (issue 13)"


# Compute-capability thresholds: one home, r1deploy.planner.gpus (MIN_CC, VOLTA_MAX_CC, AMPERE_MIN_CC, ...).
CC_HOME = "src/r1deploy/planner/gpus.py"
CC_ALLOWED = {
    # Data tables keyed by compute capability, not thresholds: CUDA majors' minimum CC, driver branches
    # per architecture, lspci board names -> CC (VOLTA_CC/TURING_CC there are planner.gpus's constants).
    "src/r1deploy/gpustack/cuda.py",
    "src/r1deploy/gpustack/driver.py",
    "src/r1deploy/gpustack/gpus.py",
}
CC_LITERAL = re.compile(r"\(\s*(?:[3-9]|1[0-2])\s*,\s*\d\s*\)")


def test_no_compute_capability_threshold_outside_its_home() -> None:
    files = sorted(
        [*REPO.glob("src/r1deploy/**/*.py"), *REPO.glob("plugins/**/*.py"), *REPO.glob("roles/*/files/*.py")]
    )
    holders = {str(p.relative_to(REPO)) for p in files if CC_LITERAL.search(p.read_text())}
    assert CC_HOME in holders
    new = sorted(holders - {CC_HOME} - CC_ALLOWED)
    assert not new, f"compute-capability tuples in {new}: import the named constants from {CC_HOME}"
    gone = sorted(CC_ALLOWED - holders)
    assert not gone, f"{gone} no longer hold a compute-capability tuple: remove them from CC_ALLOWED"
