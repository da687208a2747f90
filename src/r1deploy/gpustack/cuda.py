"""The CUDA toolkit: which version a host may get (its GPUs and loaded driver), from where, and where
it lives on the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from r1deploy.gpustack.gpus import (
    CC,
    TURING_CC,
    GpuStackError,
    as_bool,
    branch_of,
    cc_text,
    gpu_summary,
    normalise_gpu_fact,
)
from r1deploy.gpustack.oses import SOURCES, nvidia_repo, os_target_of

# Lowest compute capability each CUDA major can target (CUDA 13 removed sm_50..sm_72, so Volta).
CUDA_MIN_CC: dict[int, CC] = {11: (3, 5), 12: (5, 0), 13: TURING_CC}
# Lowest driver branch each CUDA major runs on (minor-version compatibility).
CUDA_MIN_BRANCH: dict[int, int] = {11: 450, 12: 525, 13: 580}
# The CUDA toolkit each distribution's own archive carries.
DISTRO_CUDA = {"debian12": "11.8", "ubuntu2204": "11.5", "ubuntu2404": "12.0"}


def parse_cuda_version(version: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(version))
    if not m:
        raise GpuStackError(f"CUDA version {version!r} is not MAJOR.MINOR (e.g. '12.8')")
    return int(m.group(1)), int(m.group(2))


def cuda_major_problems(major: int, gpus: Any, variable: str) -> list[str]:
    """Refusals for a CUDA major on a host's GPUs and loaded driver (empty when it fits)."""
    fact = normalise_gpu_fact(gpus)
    ccs, _ = gpu_summary(fact["devices"])
    errors = []
    if major not in CUDA_MIN_CC:
        return [f"{variable}: CUDA {major} is not known to this toolkit (supported majors: 11, 12, 13)"]
    if ccs and min(ccs) < CUDA_MIN_CC[major]:
        errors.append(
            f"{variable} selects CUDA {major}, which cannot target compute capability {cc_text(min(ccs))} "
            f"(CUDA {major} needs {cc_text(CUDA_MIN_CC[major])} or newer; CUDA 13 dropped Volta): "
            "use CUDA 12.x, e.g. '12.8'"
        )
    br = branch_of(fact["driver"]["version"])
    if br is not None and br < CUDA_MIN_BRANCH[major]:
        errors.append(
            f"{variable} selects CUDA {major} but driver {fact['driver']['version']} is loaded; "
            f"CUDA {major} needs "
            f"branch {CUDA_MIN_BRANCH[major]} or newer"
        )
    return errors


def _distro_toolkit(target_key: str, major: int, minor: int) -> tuple[dict[str, Any], list[str]]:
    """The distribution's own toolkit (nvidia-cuda-toolkit), if it is the version asked for."""
    have = DISTRO_CUDA.get(target_key)
    errors = []
    if have is None:
        errors.append(
            f"{target_key} has no CUDA toolkit in its own repositories: set cuda_toolkit_source: nvidia"
        )
    elif have != f"{major}.{minor}":
        errors.append(
            f"{target_key}'s own CUDA toolkit is {have}, not {major}.{minor}: "
            f"set cuda_toolkit_version: '{have}' "
            "or cuda_toolkit_source: nvidia"
        )
    layout = {
        "packages": ["nvidia-cuda-toolkit"],
        "home": "/usr/lib/nvidia-cuda-toolkit",
        "bin_dir": "",
        "lib_dir": "",
    }
    return layout, errors


def _nvidia_toolkit(major: int, minor: int) -> dict[str, Any]:
    """NVIDIA's cuda-toolkit-X-Y, installed under /usr/local/cuda-X.Y."""
    home = f"/usr/local/cuda-{major}.{minor}"
    return {
        "packages": [f"cuda-toolkit-{major}-{minor}"],
        "home": home,
        "bin_dir": f"{home}/bin",
        "lib_dir": f"{home}/lib64",
    }


def cuda_plan(gpus: Any, os_facts: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """What the ``cuda_toolkit`` role does. options: enabled, version, source, repo_url, repo_key_url."""
    fact = normalise_gpu_fact(gpus)
    enabled = as_bool(options.get("enabled", False))
    version = str(options.get("version", "12.8")).strip()
    source = str(options.get("source", "nvidia")).strip()
    plan: dict[str, Any] = {
        "action": "none",
        "reason": "",
        "errors": [],
        "packages": [],
        "repo": {},
        "pkg": "",
    }
    errors: list[str] = plan["errors"]
    if fact["count"] == 0:
        plan.update(action="skip", reason="CPU-only host (r1deploy_gpus.count is 0): no CUDA toolkit")
        return plan
    if not enabled:
        plan.update(
            action="skip",
            reason="cuda_toolkit_enabled is false: the serving venv's wheels bring their own CUDA runtime",
        )
        return plan
    try:
        major, minor = parse_cuda_version(version)
    except GpuStackError as exc:
        errors.append(f"cuda_toolkit_version: {exc}")
        return plan
    if source not in SOURCES:
        errors.append(f"cuda_toolkit_source is {source!r}; use one of {', '.join(SOURCES)}")
        return plan
    try:
        target = os_target_of(os_facts)
    except GpuStackError as exc:
        errors.append(str(exc))
        return plan
    errors.extend(cuda_major_problems(major, fact, "cuda_toolkit_version"))
    plan["pkg"] = target.pkg
    if source == "distro":
        layout, distro_errors = _distro_toolkit(target.key, major, minor)
        errors.extend(distro_errors)
        plan.update(layout)
    else:
        repo = nvidia_repo(target, str(options.get("repo_url") or ""), str(options.get("repo_key_url") or ""))
        plan.update(_nvidia_toolkit(major, minor), repo=repo)
    if not errors:
        plan.update(action="install", reason=f"CUDA toolkit {major}.{minor} from {source}")
    plan["version"] = f"{major}.{minor}"
    return plan
