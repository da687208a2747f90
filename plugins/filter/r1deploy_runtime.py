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
        }
