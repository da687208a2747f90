"""The variables stage-1 preflight accepts come from the roles' meta/argument_specs.yml and the explicit
lists of r1deploy.planner.variables only: every variable the sample and the lab inventories set is
known, and a name a document merely mentions is not."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from r1deploy.lab import inventory as lab_inventory
from r1deploy.lab.model import Host, LabInfo, Network
from r1deploy.planner import variables
from r1deploy.planner.preflight import check_variables

REPO = Path(__file__).resolve().parents[2]


def _filter() -> Any:
    path = REPO / "plugins" / "filter" / "r1deploy_planner.py"
    spec = importlib.util.spec_from_file_location("r1deploy_planner_filter_kv", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FILTER = _filter()
KNOWN: dict[str, str] = FILTER.known_variables()
PREFIXES: list[str] = FILTER.variable_prefixes()


def _specs() -> dict[str, Any]:
    return {
        p.parent.parent.name: yaml.safe_load(p.read_text())
        for p in REPO.glob("roles/*/meta/argument_specs.yml")
    }


def _names_in(path: Path) -> set[str]:
    data = yaml.safe_load(path.read_text()) or {}
    return set(data) if isinstance(data, dict) else set()


def _host_var_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        for host_vars in (node.get("hosts") or {}).values():
            names |= set(host_vars or {})
        for child in (node.get("children") or {}).values():
            names |= _host_var_names(child)
    return names


def _lab_info(tmp_path: Path) -> LabInfo:
    return LabInfo(
        name="lab",
        root=tmp_path,
        inventory_dir=tmp_path / "inventories" / "lab",
        hosts=[Host("lab-head", "ray_head", "172.30.0.2"), Host("lab-frontend", "frontend", "172.30.0.9")],
        cluster=Network("lab-cluster", "172.30.0.0/16", "172.30.0.1", "br-aaaa"),
        public=Network("lab-public", "172.31.0.0/16", "172.31.0.1", "br-bbbb"),
        image="r1deploy-lab-host:0123",
        ssh_key=tmp_path / "key",
        known_hosts=tmp_path / "known_hosts",
        apt_mirror_url="http://172.30.0.1:3142/debian",
        apt_security_mirror_url="http://172.30.0.1:3142/debian-security",
        pip_find_links="http://172.30.0.1:3143/",
        model_dir=tmp_path / "model",
    )


def _checked(names: set[str]) -> set[str]:
    """The names preflight checks: those with an r1deploy_ or role prefix."""
    return {n for n in names if any(n.startswith(p) for p in PREFIXES)}


def test_every_variable_the_sample_inventory_sets_is_known() -> None:
    sample = REPO / "inventories" / "sample"
    names = _host_var_names(yaml.safe_load((sample / "hosts.yml").read_text()))
    for path in sorted((sample / "group_vars").rglob("*.yml")):
        names |= _names_in(path)
    assert _checked(names), "the sample sets no prefixed variable?"
    assert sorted(_checked(names) - set(KNOWN)) == []


def test_every_variable_the_lab_inventory_sets_is_known(tmp_path: Path) -> None:
    names = set(lab_inventory.lab_vars(_lab_info(tmp_path), tmp_path / "cp"))
    names |= _host_var_names(lab_inventory.hosts_document(_lab_info(tmp_path).hosts))
    for path in sorted((REPO / "src" / "r1deploy" / "lab" / "inventory_vars").glob("*.yml")):
        names |= _names_in(path)
    assert sorted(_checked(names) - set(KNOWN)) == []


def test_a_name_only_a_document_mentions_is_not_a_variable(tmp_path: Path) -> None:
    """A typo in docs/ used to whitelist itself; now only argument_specs and the explicit lists count."""
    assert "vllm_server_plan" not in KNOWN  # a fact the role sets, not a setting
    roles = tmp_path / "roles" / "demo"
    (roles / "meta").mkdir(parents=True)
    (roles / "meta" / "argument_specs.yml").write_text(
        yaml.safe_dump({"argument_specs": {"main": {"options": {"demo_port": {"type": "int"}}}}})
    )
    (roles / "README.md").write_text("Set demo_prot to change the port.\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("demo_colour: red\n")
    known = FILTER.known_variables(tmp_path)
    assert known["demo_port"] == "int" and "demo_prot" not in known and "demo_colour" not in known
    found = check_variables("gpu01", {"demo_prot": 1}, known, ["demo_"])
    assert [(f.code, f.fix) for f in found] == [("var-unknown", "did you mean demo_port?")]


def test_argument_spec_types_win_and_options_without_a_type_are_strings() -> None:
    specs = {"r": {"argument_specs": {"main": {"options": {"r_a": {"type": "int"}, "r_b": {}}}}}}
    assert variables.from_argument_specs(specs) == {"r_a": "int", "r_b": "str"}
    assert variables.known_variables(specs)["r1deploy_node_ip"] == "raw"


@pytest.mark.parametrize(
    "table",
    [variables.INVENTORY_BUILTINS, variables.SHARED_SETTINGS_WITHOUT_A_ROLE],
    ids=["builtins", "shared"],
)
def test_the_explicit_lists_hold_only_what_no_role_declares(table: dict[str, str]) -> None:
    """A name a role's argument_specs declares leaves the explicit lists (one home for each name)."""
    declared = variables.from_argument_specs(_specs())
    assert sorted(set(table) & set(declared)) == []
    assert all(name.startswith("r1deploy_") for name in table)
