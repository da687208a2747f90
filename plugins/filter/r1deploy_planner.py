"""Ansible filters over r1deploy.planner and r1deploy.gpufacts. No rule lives here: each filter turns
Ansible's objects into plain dictionaries and calls the package.

- ``r1deploy_plan``: the serving plan (input dict as documented in docs/planner.md).
- ``r1deploy_gpu_facts``: the ``r1deploy_gpus`` fact from the ``r1deploy_gpu_facts`` module's ``raw``.
- ``r1deploy_preflight_inventory``: stage-1 checks over hostvars and groups (no facts).
- ``r1deploy_preflight_hosts``: stage-2 checks over the hosts' probe reports.
- ``r1deploy_known_variables``: every variable the project defines, with its type, read at run time
  from each role's meta/argument_specs.yml and defaults, the roles' set_fact/register names, the sample
  inventory and docs/architecture.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

try:
    from r1deploy import gpufacts, planner
    from r1deploy.planner import preflight
except ImportError:  # running from a checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from r1deploy import gpufacts, planner
    from r1deploy.planner import preflight

REPO = Path(__file__).resolve().parents[2]
_PLAN_KEYS = set(planner.PlanRequest.__dataclass_fields__) - {"labels"}


def _plain(value: Any) -> Any:
    """Ansible's tagged/unsafe strings and lazy containers -> plain Python values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def r1deploy_plan(data: dict[str, Any], labels: str = "ansible") -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AnsibleFilterError(f"r1deploy_plan expects a dict, got {type(data).__name__}")
    plain = {k: v for k, v in _plain(data).items() if k in _PLAN_KEYS}
    unknown = sorted(set(data) - _PLAN_KEYS)
    table = planner.ANSIBLE_LABELS if labels == "ansible" else planner.CLI_LABELS
    plan = planner.plan_from_dict(plain, table)
    if unknown:
        plan["errors"] = [
            *plan.get("errors", []),
            f"r1deploy_plan: unknown input key(s) {', '.join(unknown)}",
        ]
        plan["ok"] = False
        plan["vllm_args"] = []
    return plan


def r1deploy_gpu_facts(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return gpufacts.build_fact(_plain(raw or {}))
    except gpufacts.FactError as exc:
        raise AnsibleFilterError(f"r1deploy_gpu_facts: {exc}") from exc


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _literal_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, str) and "{{" not in value:
        return "str"
    return ""


def _task_fact_names(node: Any, out: set[str]) -> None:
    """Names a role's tasks define at run time (set_fact keys, register targets)."""
    if isinstance(node, list):
        for item in node:
            _task_fact_names(item, out)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("ansible.builtin.set_fact", "set_fact") and isinstance(value, dict):
                out.update(k for k in value if k != "cacheable")
            elif key == "register" and isinstance(value, str):
                out.add(value)
            elif key in ("block", "rescue", "always"):
                _task_fact_names(value, out)


def known_variables(root: Path = REPO) -> dict[str, str]:
    """{name: type} of every variable the project defines (type "" when unknown)."""
    known: dict[str, str] = {}
    for role in sorted((root / "roles").glob("*/")):
        defaults = _load_yaml(role / "defaults" / "main.yml")
        if isinstance(defaults, dict):
            for k, v in defaults.items():
                known.setdefault(str(k), _literal_type(v))
        specs = _load_yaml(role / "meta" / "argument_specs.yml")
        for entry in ((specs or {}).get("argument_specs") or {}).values() if isinstance(specs, dict) else []:
            for name, spec in ((entry or {}).get("options") or {}).items():
                known[str(name)] = str((spec or {}).get("type", "str")) if isinstance(spec, dict) else ""
        names: set[str] = set()
        for tasks in sorted((role / "tasks").glob("*.yml")):
            _task_fact_names(_load_yaml(tasks), names)
        for name in names:
            known.setdefault(name, "")
    sample = root / "inventories" / "sample"
    for path in sorted(sample.rglob("*.yml")):
        data = _load_yaml(path)
        if path.name == "hosts.yml":
            continue
        if isinstance(data, dict):
            for k, v in data.items():
                t = _literal_type(v)
                if not known.get(str(k)):
                    known[str(k)] = t
    # Names the project reads or documents: what roles, playbooks, docs and the lab's inventory vars
    # mention (a default like "{{ r1deploy_model_path | default('') }}" makes r1deploy_model_path known).
    word = re.compile(r"\b((?:" + "|".join(map(re.escape, variable_prefixes(root))) + r")[a-z0-9_]+)\b")
    sources = [
        *root.glob("roles/**/*.yml"),
        *root.glob("roles/**/*.j2"),
        *root.glob("roles/**/*.md"),
        *root.glob("playbooks/**/*.yml"),
        *root.glob("docs/**/*.md"),
        *root.glob("src/r1deploy/lab/inventory_vars/*.yml"),
    ]
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for name in word.findall(text):
            known.setdefault(name, "")
    known.setdefault("r1deploy_node_ip", "str")
    return known


def variable_prefixes(root: Path = REPO) -> list[str]:
    return ["r1deploy_", *sorted(f"{p.name}_" for p in (root / "roles").glob("*/") if p.is_dir())]


def r1deploy_known_variables(_: Any = None) -> dict[str, str]:
    return known_variables()


def _role_literal_defaults(role: str, root: Path = REPO) -> dict[str, Any]:
    data = _load_yaml(root / "roles" / role / "defaults" / "main.yml")
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if not (isinstance(v, str) and "{{" in v)}


def r1deploy_preflight_inventory(
    hostvars: Any, groups: dict[str, Any], ansible_version: str, ignore_errors: Any = False
) -> dict[str, Any]:
    prefixes = variable_prefixes()
    hosts: dict[str, dict[str, Any]] = {}
    all_hosts = sorted({str(h) for members in (groups or {}).values() for h in (members or [])})
    for host in all_hosts:
        try:
            hv = hostvars[host]
            names = list(hv.keys())
        except Exception:  # an inventory host with no vars
            continue
        picked: dict[str, Any] = {}
        for name in names:
            if name in ("ansible_host",) or any(name.startswith(p) for p in prefixes):
                try:
                    picked[name] = _plain(hv[name])
                except Exception as exc:  # a value that does not template is itself a finding
                    picked[name] = f"<undefined: {exc}>"
        hosts[host] = picked
    inv = {
        "ansible_version": str(ansible_version),
        "groups": {str(k): [str(h) for h in (v or [])] for k, v in (groups or {}).items()},
        "hosts": hosts,
        "known_variables": known_variables(),
        "prefixes": prefixes,
        "ignore_errors": ignore_errors is True,
        "plan_defaults": _role_literal_defaults("vllm_server"),
    }
    return preflight.check_inventory(inv)


def r1deploy_preflight_hosts(reports: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    s = _plain(settings or {})
    s.setdefault("plan_defaults", _role_literal_defaults("vllm_server"))
    return preflight.check_hosts({"settings": s, "hosts": _plain(reports or {})})


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "r1deploy_plan": r1deploy_plan,
            "r1deploy_gpu_facts": r1deploy_gpu_facts,
            "r1deploy_known_variables": r1deploy_known_variables,
            "r1deploy_preflight_inventory": r1deploy_preflight_inventory,
            "r1deploy_preflight_hosts": r1deploy_preflight_hosts,
        }
