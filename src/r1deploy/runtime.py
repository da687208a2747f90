"""Which serving-venv profile a host needs, and whether an installed venv can run on its GPUs.

Used by the ``vllm_runtime`` role (filter plugin ``r1deploy_runtime``) and by the CLI. Facts and
sources: shared/reference/v100-stack-research.md sections 1.1 and 2.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r1deploy.planner.gpus import parse_cc as planner_parse_cc

PROFILES = ("cpu", "volta", "cuda")

# vLLM >= 0.19 wheels and every CUDA 13 build lack sm_70 kernels (vLLM PR #39878; PyTorch 2.11
# dropped Volta from cu128). vLLM 0.18.x with torch 2.10.0+cu128 is the last line validated on
# V100s, so compute capability below 7.5 gets the pinned `volta` profile.
VOLTA_MAX_CC = (7, 5)
# vLLM's current docs require compute capability 7.5 or higher; below 7.0 nothing runs.
MIN_CC = (7, 0)


class ProfileError(ValueError):
    """A profile request that cannot work on the host's GPUs; the message says the fix."""


@dataclass(frozen=True)
class ProfileChoice:
    profile: str
    reason: str
    cuda_arch: str  # e.g. "sm_70"; "" on the cpu profile


def parse_cc(value: str | float | int) -> tuple[int, int]:
    try:
        return planner_parse_cc(value)
    except ValueError as exc:
        raise ProfileError(str(exc)) from exc


def cuda_arch(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def choose_profile(gpus: dict[str, Any], requested: str = "auto") -> ProfileChoice:
    """Pick the serving-venv profile from the ``r1deploy_gpus`` fact (see docs/architecture.md)."""
    if requested not in ("auto", *PROFILES):
        raise ProfileError(f"vllm_runtime_profile '{requested}' is unknown; use auto, {', '.join(PROFILES)}")
    count = int(gpus.get("count", 0) or 0)
    devices = gpus.get("devices") or []
    ccs = sorted({parse_cc(d["compute_capability"]) for d in devices if d.get("compute_capability")})
    if count == 0:
        if requested in ("auto", "cpu"):
            return ProfileChoice("cpu", "no NVIDIA GPU on this host: vLLM's CPU build", "")
        raise ProfileError(
            f"vllm_runtime_profile is '{requested}' but this host has no NVIDIA GPU "
            "(r1deploy_gpus.count is 0); use 'cpu' or 'auto'"
        )
    if not ccs:
        raise ProfileError(
            "the GPUs' compute capability is unknown (no driver yet?): install the driver first "
            "(playbooks/gpu_stack.yml) or set vllm_runtime_profile explicitly"
        )
    lowest = ccs[0]
    if lowest < MIN_CC:
        raise ProfileError(
            f"compute capability {lowest[0]}.{lowest[1]} is below 7.0, which no vLLM release supports"
        )
    needed = "volta" if lowest < VOLTA_MAX_CC else "cuda"
    arch = cuda_arch(lowest)
    if requested == "auto":
        reason = (
            "compute capability below 7.5: vLLM 0.18 + torch 2.10+cu128, the last wheels with sm_70 kernels"
            if needed == "volta"
            else "compute capability 7.5 or newer: current vLLM wheels"
        )
        return ProfileChoice(needed, reason, arch)
    if requested == "cuda" and needed == "volta":
        raise ProfileError(
            f"vllm_runtime_profile 'cuda' installs current vLLM wheels, which have no {arch} kernels "
            "(they fail with 'no kernel image is available'); use 'volta' or 'auto'"
        )
    if requested == "cpu":
        raise ProfileError("vllm_runtime_profile 'cpu' on a GPU host would not use the GPUs; use 'auto'")
    return ProfileChoice(requested, "set by vllm_runtime_profile", arch)


def check_kernel_report(report: dict[str, Any], profile: str, arch: str) -> list[str]:
    """Problems in the report written by the role's kernel check script; empty means usable."""
    problems: list[str] = []
    for package in ("torch", "vllm", "ray"):
        if not report.get("versions", {}).get(package):
            problems.append(
                f"{package} does not import in the serving venv: {report.get('errors', {}).get(package, '')}"
            )
    if profile == "cpu":
        return problems
    arch_list = report.get("torch_arch_list") or []
    if arch not in arch_list:
        problems.append(
            f"torch was built without {arch} kernels (it has {', '.join(arch_list) or 'none'}): "
            "the serving venv would fail with 'no kernel image is available'; use the profile's pinned torch"
        )
    if report.get("kernel_launch") != "ok":
        problems.append(f"a vLLM kernel did not run on GPU 0: {report.get('kernel_launch')}")
    return problems


def same_versions(per_host: dict[str, dict[str, str]]) -> list[str]:
    """Hosts whose Python/torch/vLLM/Ray differ from the first host's (Ray refuses mixed clusters)."""
    if not per_host:
        return []
    hosts = sorted(per_host)
    reference_host = hosts[0]
    reference = per_host[reference_host]
    problems = []
    for host in hosts[1:]:
        for package in ("python", "torch", "vllm", "ray"):
            if per_host[host].get(package) != reference.get(package):
                problems.append(
                    f"{host} has {package} {per_host[host].get(package)} but {reference_host} has {package} "
                    f"{reference.get(package)}: every node needs the same serving venv"
                )
    return problems
