"""Ansible filters over r1deploy.runtime (serving-venv profile and kernel checks); no rule lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    from r1deploy import runtime
except ImportError:  # running from a checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from r1deploy import runtime


def r1deploy_runtime_profile(gpus: dict[str, Any], requested: str = "auto") -> dict[str, str]:
    try:
        choice = runtime.choose_profile(gpus or {}, requested)
    except runtime.ProfileError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    return {"profile": choice.profile, "reason": choice.reason, "cuda_arch": choice.cuda_arch}


def r1deploy_runtime_venv_plan(
    facts: dict[str, Any], profile: str, python: str = "", requirements_file: str = ""
) -> dict[str, Any]:
    """The venv's interpreter, OS packages and lock for a host (ansible_facts), or the problem with it."""
    facts = facts or {}
    try:
        plan = runtime.venv_plan(
            str(facts.get("distribution", "")),
            str(facts.get("distribution_major_version", "")),
            profile,
            python or "",
            requirements_file or "",
        )
    except runtime.ProfileError as exc:
        return {"problems": [str(exc)], "probe": runtime.VENV_PROBE}
    return {**_plan_dict(plan), "problems": [], "probe": runtime.VENV_PROBE}


def r1deploy_runtime_venv_check(
    plan: dict[str, Any], profile: str, rc: int, stdout: str = "", stderr: str = ""
) -> dict[str, Any]:
    """The plan completed from the probe of its interpreter on the host, with the problems found."""
    checked, problems = runtime.check_interpreter(
        runtime.VenvPlan(plan["executable"], tuple(plan["packages"]), plan["python"], plan["lock"]),
        profile,
        int(rc),
        stdout or "",
        stderr or "",
    )
    return {**_plan_dict(checked), "problems": problems, "probe": runtime.VENV_PROBE}


def _plan_dict(plan: runtime.VenvPlan) -> dict[str, Any]:
    return {
        "executable": plan.executable,
        "packages": list(plan.packages),
        "python": plan.python,
        "lock": plan.lock,
    }


def r1deploy_kernel_problems(report: dict[str, Any], profile: str, arch: str) -> list[str]:
    return runtime.check_kernel_report(report or {}, profile, arch)


def r1deploy_version_mismatches(per_host: dict[str, dict[str, str]]) -> list[str]:
    return runtime.same_versions(per_host or {})


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "r1deploy_runtime_profile": r1deploy_runtime_profile,
            "r1deploy_kernel_problems": r1deploy_kernel_problems,
            "r1deploy_version_mismatches": r1deploy_version_mismatches,
            "r1deploy_runtime_waits_for_driver": runtime.waits_for_driver,
            "r1deploy_runtime_venv_plan": r1deploy_runtime_venv_plan,
            "r1deploy_runtime_venv_check": r1deploy_runtime_venv_check,
            "r1deploy_runtime_pyvenv_python": runtime.pyvenv_python,
        }
