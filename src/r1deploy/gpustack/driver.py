"""The NVIDIA driver: which branch, kernel-module flavour and packages a host gets, or why not.

:func:`driver_plan` is what the ``nvidia_driver`` role does on one host; it runs the named steps
below in order, each holding one rule. Facts and their sources: shared/reference/v100-stack-research.md
section 2 (driver branches, kernel module flavours, version locking, nouveau, Fabric Manager).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r1deploy.gpustack.gpus import (
    BLACKWELL_CC,
    CC,
    TURING_CC,
    GpuStackError,
    as_bool,
    branch_of,
    cc_text,
    gpu_summary,
    normalise_gpu_fact,
)
from r1deploy.gpustack.oses import SOURCES, OsTarget, headers_packages, nvidia_repo, os_target_of

# Open kernel modules need the GPU System Processor, which first shipped with Turing (NVIDIA
# driver installation guide, "kernel modules"; open-gpu-kernel-modules #19).
OPEN_MODULE_MIN_CC: CC = TURING_CC
# Blackwell works only with the open kernel modules (NVIDIA driver installation guide).
OPEN_MODULE_REQUIRED_CC: CC = BLACKWELL_CC
# R580 is the last branch for Maxwell, Pascal and Volta (NVIDIA's deprecation schedule; 595.x logs
# "will ignore this GPU" on a V100).
LAST_BRANCH_BELOW_TURING = 580
# First production branches for the newer architectures (NVIDIA release notes).
MIN_BRANCH_FOR_CC: tuple[tuple[CC, int], ...] = (((10, 0), 570), ((9, 0), 525), ((8, 9), 525))
# The open flavour is production-ready for data-centre GPUs from R515.
OPEN_MODULE_MIN_BRANCH = 515
# The R620 driver guide documents open kernel modules only.
PROPRIETARY_LAST_BRANCH = 595
# From R590 NVIDIA's repository drops the branch from the meta-package names.
BRANCHLESS_NAMES_FROM = 590

# Debian 12's non-free has the 535 branch only (nvidia-graphics-drivers 535.x; 535 still supports
# Volta). Ubuntu's restricted archive has the -server branches (580.173.02 in jammy/noble).
DEBIAN12_DISTRO_BRANCH = 535

DRIVER_SOURCES = SOURCES
FLAVOURS = ("auto", "proprietary", "open")

CPU_ONLY_REASON = (
    "CPU-only host (r1deploy_gpus.count is 0): NVIDIA driver, CUDA toolkit and libnccl steps "
    "are skipped; the NCCL/GLOO environment file is still written"
)


@dataclass
class DriverOptions:
    branch: str = "580"
    flavour: str = "auto"
    source: str = "distro"
    force: bool = False
    fabricmanager: str = "auto"  # auto | true | false
    secure_boot_allowed: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DriverOptions:
        fm = data.get("fabricmanager", "auto")
        return cls(
            branch=str(data.get("branch", "580")).strip(),
            flavour=str(data.get("flavour", "auto")).strip(),
            source=str(data.get("source", "distro")).strip(),
            force=as_bool(data.get("force", False)),
            fabricmanager="auto" if str(fm) == "auto" else ("true" if as_bool(fm) else "false"),
            secure_boot_allowed=as_bool(data.get("secure_boot_allowed", False)),
        )


# --------------------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------------------


def driver_packages(target: OsTarget, source: str, branch: int, flavour: str) -> dict[str, list[str]]:
    """Packages to install, the other flavour's packages (blocked/removed), and Fabric Manager."""
    b = str(branch)
    open_ = flavour == "open"
    if target.family == "ubuntu" and source == "distro":
        sfx = "-open" if open_ else ""
        other = "" if open_ else "-open"
        return {
            "install": [
                f"nvidia-headless-{b}-server{sfx}",
                f"nvidia-dkms-{b}-server{sfx}",
                f"nvidia-utils-{b}-server",
                f"nvidia-compute-utils-{b}-server",
                "dkms",
            ],
            "other_flavour": [f"nvidia-headless-{b}-server{other}", f"nvidia-dkms-{b}-server{other}"],
            "fabricmanager": [f"nvidia-fabricmanager-{b}"],
        }
    if target.family == "debian" and source == "distro":
        # The minimal compute set of Debian's non-free driver (no X server), DKMS-built.
        return {
            "install": ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced", "dkms"],
            "other_flavour": ["nvidia-open-kernel-dkms"],
            "fabricmanager": [],  # not packaged in Debian
        }
    if target.pkg == "apt":  # NVIDIA's repository, Ubuntu or Debian
        # Branch-named metas until R580; from R590 the names lose the branch (NVIDIA driver guide,
        # "Recent updates") and the branch is kept by the apt pin alone.
        suffix = f"-{b}" if branch < BRANCHLESS_NAMES_FROM else ""
        prop, opn = f"cuda-drivers{suffix}", f"nvidia-open{suffix}"
        return {
            "install": [opn if open_ else prop, "dkms"],
            "other_flavour": [prop if open_ else opn],
            "fabricmanager": [f"nvidia-fabricmanager{suffix}"],
        }
    # RHEL 9: a dnf module stream per branch and flavour; dkms comes from EPEL.
    stream = f"{b}-open" if open_ else f"{b}-dkms"
    other = f"{b}-dkms" if open_ else f"{b}-open"
    return {
        "install": [f"@nvidia-driver:{stream}", "dkms"],
        "other_flavour": [f"@nvidia-driver:{other}"],
        "fabricmanager": ["nvidia-fabric-manager"],
    }


# Installed packages that make up a driver install (held so unattended upgrades cannot move them).
# Toolkit (nvidia-cuda-*), container toolkit and NCCL packages are not the driver's.
APT_DRIVER_RE = re.compile(
    r"^(?!nvidia-cuda-|nvidia-container|nvidia-profiler|nvidia-visual-profiler|nvidia-opencl-dev)"
    r"(nvidia-|libnvidia-|libcuda1|libcuda-|cuda-drivers|firmware-nvidia-|xserver-xorg-video-nvidia)"
)
DNF_DRIVER_RE = re.compile(r"^(nvidia-|libnvidia-|cuda-drivers|kmod-nvidia|dkms-nvidia|xorg-x11-nvidia)")


# --------------------------------------------------------------------------------------------------
# The steps of the plan, each one rule
# --------------------------------------------------------------------------------------------------


def branch_format_error(branch: str) -> str:
    """A branch is three digits ("580")."""
    if re.fullmatch(r"\d{3}", branch):
        return ""
    return f"nvidia_driver_branch is {branch!r}; use a branch number such as '580'"


def choice_errors(opts: DriverOptions) -> list[str]:
    """Flavour and source must be one of the known words."""
    errors = []
    if opts.flavour not in FLAVOURS:
        errors.append(f"nvidia_driver_flavour is {opts.flavour!r}; use one of {', '.join(FLAVOURS)}")
    if opts.source not in DRIVER_SOURCES:
        errors.append(f"nvidia_driver_source is {opts.source!r}; use one of {', '.join(DRIVER_SOURCES)}")
    return errors


def allowed_flavours(ccs: Sequence[CC], unknown: Sequence[str] = ()) -> list[str]:
    """Kernel-module flavours that drive every GPU of a host."""
    out = []
    if not ccs or min(ccs) < OPEN_MODULE_REQUIRED_CC:
        out.append("proprietary")
    if ccs and not unknown and min(ccs) >= OPEN_MODULE_MIN_CC:
        out.append("open")
    return out


def choose_flavour(requested: str, allowed: Sequence[str]) -> str:
    """``auto``: proprietary wherever it drives the GPUs (every architecture before Blackwell)."""
    if requested != "auto":
        return requested
    return "proprietary" if "proprietary" in allowed else "open"


def unknown_architecture_errors(unknown: Sequence[str], requested: str, fact_source: str) -> list[str]:
    """The open flavour only where every GPU's architecture is known to support it."""
    if not unknown or requested != "open":
        return []
    return [
        f"cannot tell the architecture of {', '.join(unknown)} (GPU fact from {fact_source}), so the "
        "open kernel module cannot be shown to support it: set nvidia_driver_flavour: proprietary"
    ]


def flavour_errors(flavour: str, branch: int, low: CC | None) -> list[str]:
    """The flavour against the oldest GPU and the branch."""
    errors = []
    if flavour == "open" and low is not None and low < OPEN_MODULE_MIN_CC:
        errors.append(
            f"nvidia_driver_flavour is 'open' but this host has compute capability {cc_text(low)} GPUs "
            "(Volta or older): the open kernel modules ignore them (nvidia-smi: 'No devices were found'). "
            "Set nvidia_driver_flavour: proprietary (or auto)"
        )
    if flavour == "proprietary" and low is not None and low >= OPEN_MODULE_REQUIRED_CC:
        errors.append(
            f"compute capability {cc_text(low)} (Blackwell) needs the open kernel modules: "
            "set nvidia_driver_flavour: open (or auto)"
        )
    if flavour == "open" and branch < OPEN_MODULE_MIN_BRANCH:
        errors.append(
            f"the open kernel modules need branch {OPEN_MODULE_MIN_BRANCH} or newer: "
            "raise nvidia_driver_branch"
        )
    if flavour == "proprietary" and branch > PROPRIETARY_LAST_BRANCH:
        errors.append(
            f"NVIDIA ships branch {branch} with open kernel modules only: use nvidia_driver_branch "
            f"'{PROPRIETARY_LAST_BRANCH}' or older for the proprietary flavour"
        )
    return errors


def branch_errors(branch: int, ccs: Sequence[CC]) -> list[str]:
    """The branch against the GPUs: not past R580 below Turing, new enough for the newest GPU."""
    errors = []
    low = min(ccs) if ccs else None
    if low is not None and low < OPEN_MODULE_MIN_CC and branch > LAST_BRANCH_BELOW_TURING:
        errors.append(
            f"nvidia_driver_branch is '{branch}' but R{LAST_BRANCH_BELOW_TURING} is the last branch "
            "that supports "
            f"compute capability {cc_text(low)} (Volta/Pascal/Maxwell); newer drivers ignore these GPUs. "
            f"Set nvidia_driver_branch: '{LAST_BRANCH_BELOW_TURING}'"
        )
    for min_cc, min_branch in MIN_BRANCH_FOR_CC:
        if ccs and max(ccs) >= min_cc and branch < min_branch:
            errors.append(
                f"compute capability {cc_text(max(ccs))} needs driver branch {min_branch} or newer: "
                f"raise nvidia_driver_branch (e.g. '580')"
            )
            break
    return errors


def source_errors(target: OsTarget, source: str, branch: int, flavour: str) -> list[str]:
    """The package source against the OS: what each distribution's own archive carries."""
    errors = []
    if target.family == "rhel" and source == "distro":
        errors.append(
            "RHEL-family 9 has no NVIDIA driver in its own repositories: set nvidia_driver_source: nvidia "
            "(NVIDIA's CUDA repository, dnf module stream)"
        )
    if target.family == "debian" and source == "distro":
        if branch != DEBIAN12_DISTRO_BRANCH:
            errors.append(
                f"Debian 12's non-free archive carries driver branch {DEBIAN12_DISTRO_BRANCH} only, "
                f"not {branch}: set nvidia_driver_branch: '{DEBIAN12_DISTRO_BRANCH}' (it supports Volta; "
                "CUDA 12.x user space "
                "runs on it through minor-version compatibility) or nvidia_driver_source: nvidia for "
                f"R{branch} from NVIDIA's repository"
            )
        if flavour == "open":
            errors.append(
                "Debian 12 ships its open kernel module in contrib, out of step with the non-free driver's "
                "security updates: use nvidia_driver_flavour: proprietary, or nvidia_driver_source: nvidia"
            )
    return errors


def fabricmanager_wanted(setting: str, nvswitch: bool) -> bool:
    """Fabric Manager: NVSwitch systems only (HGX-2/DGX-2 class for V100), unless set explicitly."""
    return nvswitch if setting == "auto" else setting == "true"


def fabricmanager_errors(wanted: bool, packages: Sequence[str]) -> list[str]:
    if wanted and not packages:
        return [
            "this host has NVSwitch (Fabric Manager needed) but Debian does not package Fabric Manager: "
            "set nvidia_driver_source: nvidia"
        ]
    return []


@dataclass(frozen=True)
class InstalledVerdict:
    """What to do about the driver the host runs now: ``present``, ``install``, or refuse (``error``)."""

    action: str
    reason: str = ""
    flavour: str = ""
    error: str = ""
    # The loaded driver is the right one: it loads under Secure Boot, so no MOK question either.
    loaded_ok: bool = False


def installed_verdict(
    installed: Mapping[str, str],
    branch: int,
    flavour: str,
    opts: DriverOptions,
    allowed: Sequence[str],
    low: CC | None,
) -> InstalledVerdict:
    """Keep a loaded driver of the right branch and flavour; replace another only when forced."""
    version, loaded = installed["version"], installed["flavour"]
    loaded_branch = branch_of(version)
    if not version:
        return InstalledVerdict(
            "install",
            f"no NVIDIA driver loaded: installing the {flavour} R{branch} driver from {opts.source}",
        )
    right_flavour = loaded == flavour or (opts.flavour == "auto" and loaded in allowed)
    if loaded_branch == branch and right_flavour:
        if opts.force:
            return InstalledVerdict(
                "install", f"driver {version} ({loaded}) is loaded; reinstall forced", loaded, loaded_ok=True
            )
        return InstalledVerdict(
            "present",
            f"driver {version} ({loaded} kernel module) is loaded and right for these GPUs",
            loaded,
            loaded_ok=True,
        )
    why = []
    if loaded_branch != branch:
        why.append(f"branch {loaded_branch}, not {branch}")
    if loaded not in allowed:
        low_text = cc_text(low) if low else "?"
        why.append(f"the {loaded} kernel module, which ignores compute capability {low_text} GPUs")
    elif loaded != flavour:
        why.append(f"the {loaded} kernel module, not {flavour}")
    text = f"driver {version} is loaded: " + "; ".join(why)
    if not opts.force:
        return InstalledVerdict(
            "",
            error=(
                f"{text}. Set nvidia_driver_force_install: true to replace it with the {flavour} R{branch} "
                "driver (packages replaced, host rebooted), or set nvidia_driver_branch/"
                "nvidia_driver_flavour "
                "to keep it"
            ),
        )
    return InstalledVerdict("install", f"{text}; replacing it (nvidia_driver_force_install)")


def secure_boot_findings(secure_boot: str, allowed: bool) -> tuple[list[str], list[str]]:
    """(errors, warnings) for an install under Secure Boot: DKMS's key must be enrolled first."""
    if secure_boot != "enabled":
        return [], []
    if not allowed:
        return [
            "Secure Boot is enabled: the DKMS-built nvidia modules load only if they are signed with a key "
            "enrolled in the firmware (MOK). Either disable Secure Boot in the firmware, or enrol DKMS's key "
            "(mokutil --import /var/lib/dkms/mok.pub, then confirm at the console on the next boot) and set "
            "nvidia_driver_secure_boot_allowed: true"
        ], []
    return [], ["Secure Boot is enabled; nvidia_driver_secure_boot_allowed says DKMS's MOK key is enrolled"]


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------


def _empty_plan(opts: DriverOptions, installed: Mapping[str, str]) -> dict[str, Any]:
    return {
        "action": "none",
        "reason": "",
        "errors": [],
        "warnings": [],
        "branch": opts.branch,
        "flavour": "",
        "source": opts.source,
        "pkg": "",
        "packages": [],
        "other_flavour_packages": [],
        "headers_packages": [],
        "fabricmanager": False,
        "fabricmanager_packages": [],
        "repo": {},
        "debian_nonfree": False,
        "hold_regex": "",
        "installed": installed,
        "compute_capabilities": [],
    }


def driver_plan(
    gpus: Any,
    os_facts: Mapping[str, Any],
    options: Mapping[str, Any],
    kernel: str = "",
    secure_boot: str = "unknown",
) -> dict[str, Any]:
    """What the ``nvidia_driver`` role does on one host.

    ``os_facts``: distribution, distribution_version, architecture (Ansible facts).
    ``options``: branch, flavour, source, force, fabricmanager, secure_boot_allowed, repo_url,
    repo_key_url (role variables).
    ``secure_boot``: "enabled" | "disabled" | "unsupported" (legacy BIOS) | "unknown".
    Returns a dict; ``errors`` lists every refusal (the role fails on any, before changing anything).
    ``action``: skip (CPU-only), install, or present (the right driver is loaded: the role still
    enforces sources, pin, holds, blacklist and persistence daemon; ``other_flavour_packages`` are the
    loaded flavour's other one, for the pin).
    """
    fact = normalise_gpu_fact(gpus)
    opts = DriverOptions.from_mapping(options)
    plan = _empty_plan(opts, fact["driver"])
    errors: list[str] = plan["errors"]
    if fact["count"] == 0:
        plan.update(action="skip", reason=CPU_ONLY_REASON)
        return plan

    # 1. The options themselves and the OS.
    if problem := branch_format_error(opts.branch):
        errors.append(problem)
        return plan
    errors.extend(choice_errors(opts))
    try:
        target = os_target_of(os_facts)
    except GpuStackError as exc:
        errors.append(str(exc))
        return plan
    if errors:
        return plan
    plan["pkg"] = target.pkg
    branch = int(opts.branch)

    # 2. The GPUs: flavour, branch, source.
    ccs, unknown = gpu_summary(fact["devices"])
    plan["compute_capabilities"] = sorted({cc_text(c) for c in ccs})
    low = min(ccs) if ccs else None
    errors.extend(unknown_architecture_errors(unknown, opts.flavour, fact["source"]))
    allowed = allowed_flavours(ccs, unknown)
    flavour = choose_flavour(opts.flavour, allowed)
    plan["flavour"] = flavour
    errors.extend(flavour_errors(flavour, branch, low))
    errors.extend(branch_errors(branch, ccs))
    errors.extend(source_errors(target, opts.source, branch, flavour))
    plan["debian_nonfree"] = target.family == "debian" and opts.source == "distro"

    # 3. Packages, repository, holds.
    want_fm = fabricmanager_wanted(opts.fabricmanager, fact["nvswitch"])
    pkgs = driver_packages(target, opts.source, branch, flavour)
    errors.extend(fabricmanager_errors(want_fm, pkgs["fabricmanager"]))
    plan.update(
        {
            "packages": pkgs["install"],
            "other_flavour_packages": pkgs["other_flavour"],
            "headers_packages": headers_packages(target, kernel) if kernel else [],
            "fabricmanager": bool(want_fm),
            "fabricmanager_packages": pkgs["fabricmanager"] if want_fm else [],
            "repo": nvidia_repo(
                target, str(options.get("repo_url") or ""), str(options.get("repo_key_url") or "")
            )
            if opts.source == "nvidia"
            else {},
            "hold_regex": (APT_DRIVER_RE if target.pkg == "apt" else DNF_DRIVER_RE).pattern,
            "branch": str(branch),
        }
    )
    if not kernel:
        errors.append("the running kernel release is unknown: set nvidia_driver_kernel_release")
    if errors:
        return plan

    # 4. What is loaded now.
    verdict = installed_verdict(fact["driver"], branch, flavour, opts, allowed, low)
    if verdict.error:
        errors.append(verdict.error)
        return plan
    plan.update(action=verdict.action, reason=verdict.reason)
    if verdict.flavour:
        plan["flavour"] = verdict.flavour
    if verdict.action == "present":
        plan["packages"] = []
        # The pin keeps blocking the flavour that is not loaded.
        plan["other_flavour_packages"] = driver_packages(target, opts.source, branch, verdict.flavour)[
            "other_flavour"
        ]
        return plan
    if verdict.loaded_ok:
        return plan

    # 5. An install under Secure Boot.
    sb_errors, sb_warnings = secure_boot_findings(secure_boot, opts.secure_boot_allowed)
    errors.extend(sb_errors)
    plan["warnings"].extend(sb_warnings)
    return plan
