"""Ansible filters over r1deploy.planner and r1deploy.gpufacts. No rule lives here: each filter turns
Ansible's objects into plain dictionaries and calls the package.

- ``r1deploy_plan``: the serving plan (input dict as documented in docs/planner.md).
- ``r1deploy_gpu_facts``: the ``r1deploy_gpus`` fact from the ``r1deploy_gpu_facts`` module's ``raw``.
- ``r1deploy_preflight_inventory``: stage-1 checks over hostvars and groups (no facts).
- ``r1deploy_preflight_hosts``: stage-2 checks over the hosts' probe reports.
- ``r1deploy_known_variables``: every variable a user may set, with its type: the options of each
  role's meta/argument_specs.yml plus the explicit lists in r1deploy.planner.variables.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

try:
    from r1deploy import gpufacts, planner
    from r1deploy.planner import preflight, variables
except ImportError:  # running from a checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from r1deploy import gpufacts, planner
    from r1deploy.planner import preflight, variables

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


def known_variables(root: Path = REPO) -> dict[str, str]:
    """{name: type} of every variable a user may set: the roles' meta/argument_specs.yml plus the
    explicit lists of r1deploy.planner.variables (never docs, templates or task files)."""
    specs = {
        p.parent.parent.name: _load_yaml(p) for p in sorted(root.glob("roles/*/meta/argument_specs.yml"))
    }
    return variables.known_variables(specs)


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
