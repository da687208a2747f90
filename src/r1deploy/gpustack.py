"""GPU stack selection rules: NVIDIA driver, CUDA toolkit, NCCL environment and the NCCL check verdict.

The one place these rules live. The roles ``nvidia_driver``, ``cuda_toolkit`` and ``nccl`` call them
through the filter plugin ``plugins/filter/r1deploy_gpustack.py``; the unit tests call them directly.
Pure: no I/O, no Ansible. Compute-capability parsing comes from ``r1deploy.planner.gpus`` (the planner
owns it); dtype and memory rules stay in the planner.

Facts and their sources: shared/reference/v100-stack-research.md section 2 (driver branches, kernel
module flavours, CUDA 13 and Volta, version locking, nouveau, Fabric Manager) and section 3
(NCCL/GLOO interface variables and how vLLM's Ray executor copies ``NCCL_*`` to workers).

Every function that validates returns (or raises with) messages that name the variable to change
and the fix; the roles prefix them with the host name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r1deploy import gpufacts
from r1deploy.planner.gpus import parse_cc

CC = tuple[int, int]

# --------------------------------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------------------------------

# Open kernel modules need the GPU System Processor, which first shipped with Turing (NVIDIA
# driver installation guide, "kernel modules"; open-gpu-kernel-modules #19).
OPEN_MODULE_MIN_CC: CC = (7, 5)
# Blackwell works only with the open kernel modules (NVIDIA driver installation guide).
OPEN_MODULE_REQUIRED_CC: CC = (10, 0)
# R580 is the last branch for Maxwell, Pascal and Volta (NVIDIA's deprecation schedule; 595.x logs
# "will ignore this GPU" on a V100).
LAST_BRANCH_BELOW_TURING = 580
# First production branches for the newer architectures (NVIDIA release notes).
MIN_BRANCH_FOR_CC: tuple[tuple[CC, int], ...] = (((10, 0), 570), ((9, 0), 525), ((8, 9), 525))
# The open flavour is production-ready for data-centre GPUs from R515.
OPEN_MODULE_MIN_BRANCH = 515
# The R620 driver guide documents open kernel modules only.
PROPRIETARY_LAST_BRANCH = 595

# lspci shows chip codes and board names, not compute capabilities. Used only when the fact came
# from lspci (no driver yet); nvidia-smi's compute_cap always wins.
_NAME_CC: tuple[tuple[str, CC], ...] = (
    (r"\bGB\d{3}|\bB[123]00\b|Blackwell|RTX 50\d\d", (10, 0)),
    (r"\bGH100|\bGH200|\bH100|\bH200|\bH800|\bH20\b", (9, 0)),
    (r"\bAD10\d|\bL40|\bL4\b|\bL20\b|RTX 40\d\d|Ada Generation", (8, 9)),
    (r"\bGA100|\bA100|\bA800|\bA30\b", (8, 0)),
    (r"\bGA10[2-7]|\bA10\b|\bA16\b|\bA40\b|\bA2\b|RTX A\d+|RTX 30\d\d", (8, 6)),
    (r"\bTU1\d\d|\bT4\b|Quadro RTX|TITAN RTX|RTX 20\d\d", (7, 5)),
    (r"\bGV10\d|\bV100|TITAN V\b", (7, 0)),
    (r"\bGP10\d|\bP100|\bP40\b|\bP4\b|\bP6000", (6, 0)),
)


class GpuStackError(ValueError):
    """Input that no rule accepts; the message names the variable and the fix."""


def device_cc(device: Mapping[str, Any]) -> CC | None:
    """A device's compute capability: nvidia-smi's value, else inferred from the lspci name."""
    raw = str(device.get("compute_capability") or "").strip()
    if raw:
        return parse_cc(raw)
    name = str(device.get("name") or "")
    for pattern, cc in _NAME_CC:
        if re.search(pattern, name, re.IGNORECASE):
            return cc
    return None


def cc_text(cc: CC) -> str:
    return f"{cc[0]}.{cc[1]}"


def normalise_gpu_fact(value: Any) -> dict[str, Any]:
    """Validate the ``r1deploy_gpus`` fact (docs/architecture.md) and fill defaults.

    Accepts the fact itself or the local-fact wrapping ``{"r1deploy_gpus": {...}}``.
    """
    if (
        isinstance(value, Mapping)
        and "count" not in value
        and isinstance(value.get("r1deploy_gpus"), Mapping)
    ):
        value = value["r1deploy_gpus"]
    if not isinstance(value, Mapping) or "count" not in value:
        raise GpuStackError(
            "the GPU fact r1deploy_gpus is missing or has no 'count': run playbooks/preflight.yml first "
            "(it writes /etc/ansible/facts.d/r1deploy_gpus.fact)"
        )
    try:
        count = int(value["count"])
    except (TypeError, ValueError) as exc:
        raise GpuStackError(f"r1deploy_gpus.count is {value['count']!r}, not a number") from exc
    devices = [dict(d) for d in (value.get("devices") or [])]
    driver = dict(value.get("driver") or {})
    version = str(driver.get("version") or "")
    flavour = str(driver.get("flavour") or ("none" if not version else "proprietary"))
    if flavour not in ("proprietary", "open", "none"):
        raise GpuStackError(
            f"r1deploy_gpus.driver.flavour is {flavour!r}; expected proprietary, open or none"
        )
    return {
        "source": str(value.get("source") or "none"),
        "count": count,
        "devices": devices,
        "driver": {"version": version, "flavour": flavour},
        "nvswitch": bool(value.get("nvswitch", False)),
    }


def branch_of(version: str) -> int | None:
    m = re.match(r"\s*(\d+)\.", version or "")
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------------
# Operating systems
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsTarget:
    key: str  # "ubuntu2404", "debian12", "rhel9": NVIDIA's repository folder name too
    family: str  # "ubuntu" | "debian" | "rhel"
    pkg: str  # "apt" | "dnf"
    version: str  # "24.04" | "12" | "9"
    repo_arch: str  # "x86_64" | "sbsa"


SUPPORTED_OS = "Ubuntu 22.04/24.04, Debian 12, Rocky Linux/RHEL/AlmaLinux 9"


def os_target(distribution: str, version: str, architecture: str = "x86_64") -> OsTarget:
    """Map Ansible's distribution facts to a supported target, or refuse."""
    dist = (distribution or "").strip()
    ver = str(version or "").strip()
    major = ver.split(".")[0]
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "sbsa", "arm64": "sbsa"}.get(architecture)
    if arch is None:
        raise GpuStackError(f"CPU architecture {architecture!r} is not supported (x86_64 or aarch64)")
    if dist == "Ubuntu" and ver in ("22.04", "24.04"):
        return OsTarget("ubuntu" + ver.replace(".", ""), "ubuntu", "apt", ver, arch)
    if dist == "Debian" and major == "12":
        return OsTarget("debian12", "debian", "apt", "12", arch)
    if dist in ("Rocky", "RedHat", "AlmaLinux") and major == "9":
        return OsTarget("rhel9", "rhel", "dnf", "9", arch)
    raise GpuStackError(f"{dist} {ver} is not supported by the GPU stack roles (supported: {SUPPORTED_OS})")


# NVIDIA's CUDA repository and its signing keys (rotated in 2022: 3bf863cc for Debian/Ubuntu,
# D42D0685 for RHEL).
NVIDIA_REPO_BASE = "https://developer.download.nvidia.com/compute/cuda/repos"
_NVIDIA_KEY = {"apt": "3bf863cc.pub", "dnf": "D42D0685.pub"}


def nvidia_repo(target: OsTarget, url: str = "", key_url: str = "") -> dict[str, str]:
    """NVIDIA's CUDA repository for this OS (``url`` and ``key_url`` override it for a local mirror)."""
    base = (url or f"{NVIDIA_REPO_BASE}/{target.key}/{target.repo_arch}/").rstrip("/") + "/"
    return {
        "name": "r1deploy-nvidia-cuda",
        "url": base,
        "key_url": key_url or base + _NVIDIA_KEY[target.pkg],
        "description": "NVIDIA CUDA repository (r1deploy)",
    }


# Distribution archives: which driver branches and CUDA toolkit they carry.
# Debian 12's non-free has the 535 branch only (nvidia-graphics-drivers 535.x; 535 still supports
# Volta). Ubuntu's restricted archive has the -server branches (580.173.02 in jammy/noble).
DEBIAN12_DISTRO_BRANCH = 535
DISTRO_CUDA = {"debian12": "11.8", "ubuntu2204": "11.5", "ubuntu2404": "12.0"}

DRIVER_SOURCES = ("distro", "nvidia")
FLAVOURS = ("auto", "proprietary", "open")

# Installed packages that make up a driver install (held so unattended upgrades cannot move them).
# Toolkit (nvidia-cuda-*), container toolkit and NCCL packages are not the driver's.
_APT_DRIVER_RE = re.compile(
    r"^(?!nvidia-cuda-|nvidia-container|nvidia-profiler|nvidia-visual-profiler|nvidia-opencl-dev)"
    r"(nvidia-|libnvidia-|libcuda1|libcuda-|cuda-drivers|firmware-nvidia-|xserver-xorg-video-nvidia)"
)
_DNF_DRIVER_RE = re.compile(r"^(nvidia-|libnvidia-|cuda-drivers|kmod-nvidia|dkms-nvidia|xorg-x11-nvidia)")


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
            force=_bool(data.get("force", False)),
            fabricmanager="auto" if str(fm) == "auto" else ("true" if _bool(fm) else "false"),
            secure_boot_allowed=_bool(data.get("secure_boot_allowed", False)),
        )


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _driver_packages(target: OsTarget, source: str, branch: int, flavour: str) -> dict[str, list[str]]:
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
        suffix = f"-{b}" if branch < 590 else ""
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


def _headers_packages(target: OsTarget, kernel: str) -> list[str]:
    if target.pkg == "apt":
        return [f"linux-headers-{kernel}"]
    return [f"kernel-devel-{kernel}", f"kernel-headers-{kernel}"]


def _gpu_summary(devices: Sequence[Mapping[str, Any]]) -> tuple[list[CC], list[str]]:
    ccs: list[CC] = []
    unknown: list[str] = []
    for d in devices:
        cc = device_cc(d)
        if cc is None:
            unknown.append(str(d.get("name") or f"GPU {d.get('index', '?')}"))
        else:
            ccs.append(cc)
    return ccs, unknown


def allowed_flavours(ccs: Sequence[CC], unknown: Sequence[str] = ()) -> list[str]:
    """Kernel-module flavours that drive every GPU of a host."""
    out = []
    if not ccs or min(ccs) < OPEN_MODULE_REQUIRED_CC:
        out.append("proprietary")
    if ccs and not unknown and min(ccs) >= OPEN_MODULE_MIN_CC:
        out.append("open")
    return out


def driver_plan(
    gpus: Any,
    os_facts: Mapping[str, Any],
    options: Mapping[str, Any],
    kernel: str = "",
    secure_boot: str = "unknown",
) -> dict[str, Any]:
    """What the ``nvidia_driver`` role does on one host.

    ``os_facts``: distribution, distribution_version, architecture (Ansible facts).
    ``options``: branch, flavour, source, force, fabricmanager, secure_boot_allowed (role variables).
    ``secure_boot``: "enabled" | "disabled" | "unsupported" (legacy BIOS) | "unknown".
    Returns a dict; ``errors`` lists every refusal (the role fails on any, before changing anything).
    """
    fact = normalise_gpu_fact(gpus)
    opts = DriverOptions.from_mapping(options)
    errors: list[str] = []
    plan: dict[str, Any] = {
        "action": "none",
        "reason": "",
        "errors": errors,
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
        "installed": fact["driver"],
        "compute_capabilities": [],
    }
    if fact["count"] == 0:
        plan["action"] = "skip"
        plan["reason"] = (
            "CPU-only host (r1deploy_gpus.count is 0): NVIDIA driver, CUDA toolkit and libnccl steps "
            "are skipped; the NCCL/GLOO environment file is still written"
        )
        return plan

    if not re.fullmatch(r"\d{3}", opts.branch):
        errors.append(f"nvidia_driver_branch is {opts.branch!r}; use a branch number such as '580'")
        return plan
    branch = int(opts.branch)
    if opts.flavour not in FLAVOURS:
        errors.append(f"nvidia_driver_flavour is {opts.flavour!r}; use one of {', '.join(FLAVOURS)}")
    if opts.source not in DRIVER_SOURCES:
        errors.append(f"nvidia_driver_source is {opts.source!r}; use one of {', '.join(DRIVER_SOURCES)}")
    try:
        target = os_target(
            str(os_facts.get("distribution", "")),
            str(os_facts.get("distribution_version", "")),
            str(os_facts.get("architecture", "x86_64")),
        )
    except GpuStackError as exc:
        errors.append(str(exc))
        return plan
    if errors:
        return plan
    plan["pkg"] = target.pkg

    ccs, unknown = _gpu_summary(fact["devices"])
    plan["compute_capabilities"] = sorted({cc_text(c) for c in ccs})
    low = min(ccs) if ccs else None
    if unknown and opts.flavour == "open":
        errors.append(
            f"cannot tell the architecture of {', '.join(unknown)} (GPU fact from {fact['source']}), so the "
            "open kernel module cannot be shown to support it: set nvidia_driver_flavour: proprietary"
        )

    # Flavour
    allowed = allowed_flavours(ccs, unknown)
    if opts.flavour == "auto":
        flavour = "proprietary" if "proprietary" in allowed else "open"
    else:
        flavour = opts.flavour
    plan["flavour"] = flavour
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

    # Branch against the GPUs
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

    # Source against the OS
    if target.family == "rhel" and opts.source == "distro":
        errors.append(
            "RHEL-family 9 has no NVIDIA driver in its own repositories: set nvidia_driver_source: nvidia "
            "(NVIDIA's CUDA repository, dnf module stream)"
        )
    if target.family == "debian" and opts.source == "distro":
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
        plan["debian_nonfree"] = True

    # Fabric Manager: NVSwitch systems only (HGX-2/DGX-2 class for V100)
    want_fm = fact["nvswitch"] if opts.fabricmanager == "auto" else opts.fabricmanager == "true"
    pkgs = _driver_packages(target, opts.source, branch, flavour)
    if want_fm and not pkgs["fabricmanager"]:
        errors.append(
            "this host has NVSwitch (Fabric Manager needed) but Debian does not package Fabric Manager: "
            "set nvidia_driver_source: nvidia"
        )

    plan.update(
        {
            "packages": pkgs["install"],
            "other_flavour_packages": pkgs["other_flavour"],
            "headers_packages": _headers_packages(target, kernel) if kernel else [],
            "fabricmanager": bool(want_fm),
            "fabricmanager_packages": pkgs["fabricmanager"] if want_fm else [],
            "repo": nvidia_repo(
                target, str(options.get("repo_url") or ""), str(options.get("repo_key_url") or "")
            )
            if opts.source == "nvidia"
            else {},
            "hold_regex": (_APT_DRIVER_RE if target.pkg == "apt" else _DNF_DRIVER_RE).pattern,
            "branch": str(branch),
        }
    )
    if not kernel:
        errors.append("the running kernel release is unknown: set nvidia_driver_kernel_release")

    # What is installed now
    inst = fact["driver"]
    inst_branch = branch_of(inst["version"])
    if errors:
        return plan
    if (
        inst["version"]
        and inst_branch == branch
        and (inst["flavour"] == flavour or (opts.flavour == "auto" and inst["flavour"] in allowed))
    ):
        plan["flavour"] = inst["flavour"]
        if opts.force:
            plan["action"] = "install"
            plan["reason"] = f"driver {inst['version']} ({inst['flavour']}) is loaded; reinstall forced"
        else:
            plan["action"] = "present"
            plan["reason"] = (
                f"driver {inst['version']} ({inst['flavour']} kernel module) is loaded and right "
                "for these GPUs"
            )
            plan["packages"] = []
            plan["other_flavour_packages"] = []
        return plan
    if inst["version"]:
        why = []
        if inst_branch != branch:
            why.append(f"branch {inst_branch}, not {branch}")
        if inst["flavour"] not in allowed:
            why.append(
                f"the {inst['flavour']} kernel module, which ignores compute capability "
                f"{cc_text(low) if low else '?'} GPUs"
            )
        elif inst["flavour"] != flavour:
            why.append(f"the {inst['flavour']} kernel module, not {flavour}")
        text = f"driver {inst['version']} is loaded: " + "; ".join(why)
        if not opts.force:
            errors.append(
                f"{text}. Set nvidia_driver_force_install: true to replace it with the {flavour} R{branch} "
                "driver (packages replaced, host rebooted), or set nvidia_driver_branch/"
                "nvidia_driver_flavour "
                "to keep it"
            )
            return plan
        plan["action"] = "install"
        plan["reason"] = f"{text}; replacing it (nvidia_driver_force_install)"
    else:
        plan["action"] = "install"
        plan["reason"] = (
            f"no NVIDIA driver loaded: installing the {flavour} R{branch} driver from {opts.source}"
        )

    if secure_boot == "enabled" and not opts.secure_boot_allowed:
        errors.append(
            "Secure Boot is enabled: the DKMS-built nvidia modules load only if they are signed with a key "
            "enrolled in the firmware (MOK). Either disable Secure Boot in the firmware, or enrol DKMS's key "
            "(mokutil --import /var/lib/dkms/mok.pub, then confirm at the console on the next boot) and set "
            "nvidia_driver_secure_boot_allowed: true"
        )
    elif secure_boot == "enabled":
        plan["warnings"].append(
            "Secure Boot is enabled; nvidia_driver_secure_boot_allowed says DKMS's MOK key is enrolled"
        )
    return plan


def hold_packages(installed: Mapping[str, Any], hold_regex: str) -> list[str]:
    """Installed driver packages (names from ``package_facts``) that must be held."""
    rx = re.compile(hold_regex)
    return sorted(name for name in installed if rx.search(name))


def versionlock_lines(installed: Mapping[str, Sequence[Mapping[str, Any]]], hold_regex: str) -> list[str]:
    """``/etc/dnf/plugins/versionlock.list`` entries for the installed driver packages."""
    out = []
    for name in hold_packages(installed, hold_regex):
        for p in installed[name]:
            epoch = p.get("epoch") or 0
            out.append(f"{name}-{epoch}:{p.get('version')}-{p.get('release')}.*")
    return sorted(out)


def secure_boot_state(efi_dir_exists: bool, efivar_b64: str = "") -> str:
    """From ``/sys/firmware/efi`` and the SecureBoot EFI variable (base64 of its bytes)."""
    import base64

    if not efi_dir_exists:
        return "unsupported"
    if not efivar_b64:
        return "unknown"
    data = base64.b64decode(efivar_b64)
    # 4 bytes of attributes, then the value.
    return "enabled" if data and data[-1] == 1 else "disabled"


def parse_driver_version_file(text: str) -> dict[str, str]:
    """``/proc/driver/nvidia/version`` -> {"version", "flavour"} (parsing owned by r1deploy.gpufacts)."""
    version, flavour = gpufacts.parse_driver_version(text)
    return {"version": version, "flavour": flavour}


# The query the verify step runs: the GPU fact's own (r1deploy.gpufacts), so one parser reads both.
SMI_QUERY = ",".join(gpufacts.QUERY_FIELDS)


def verify_driver(
    smi_stdout: str,
    version_file: str,
    plan: Mapping[str, Any],
    expected_count: int,
    want_persistence: bool = False,
) -> dict[str, Any]:
    """Check a loaded driver against the plan.

    ``smi_stdout``: ``nvidia-smi --query-gpu=SMI_QUERY --format=csv,noheader,nounits``.
    """
    loaded = parse_driver_version_file(version_file)
    errors = []
    try:
        gpus = gpufacts.parse_nvidia_smi(smi_stdout or "")
    except gpufacts.FactError as exc:
        gpus = []
        errors.append(f"nvidia-smi printed something unexpected: {exc}")
    if not loaded["version"]:
        errors.append("/proc/driver/nvidia/version is missing: the nvidia kernel module is not loaded")
    if loaded["version"] and branch_of(loaded["version"]) != int(plan.get("branch") or 0):
        errors.append(f"driver {loaded['version']} is loaded, not branch {plan.get('branch')}")
    ccs = [parse_cc(g["compute_capability"]) for g in gpus if g["compute_capability"]]
    if loaded["version"] and ccs and loaded["flavour"] not in allowed_flavours(ccs):
        errors.append(
            f"the {loaded['flavour']} kernel module is loaded, which does not drive compute capability "
            f"{cc_text(min(ccs))} GPUs: reinstall with nvidia_driver_flavour: proprietary"
        )
    if expected_count and len(gpus) != expected_count:
        errors.append(
            f"nvidia-smi lists {len(gpus)} GPUs but the host has {expected_count}: the driver ignores some "
            "(check `dmesg | grep NVRM` for 'will ignore this GPU')"
        )
    if want_persistence and any(not g["persistence_mode"] for g in gpus):
        errors.append("persistence mode is off: check `systemctl status nvidia-persistenced`")
    devices = [{k: v for k, v in g.items() if not k.startswith("_")} for g in gpus]
    return {
        "ok": not errors,
        "errors": errors,
        "version": loaded["version"],
        "flavour": loaded["flavour"],
        "gpus": devices,
    }


# --------------------------------------------------------------------------------------------------
# CUDA toolkit
# --------------------------------------------------------------------------------------------------

# Lowest compute capability each CUDA major can target (CUDA 13 removed sm_50..sm_72).
CUDA_MIN_CC: dict[int, CC] = {11: (3, 5), 12: (5, 0), 13: (7, 5)}
# Lowest driver branch each CUDA major runs on (minor-version compatibility).
CUDA_MIN_BRANCH: dict[int, int] = {11: 450, 12: 525, 13: 580}


def parse_cuda_version(version: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(version))
    if not m:
        raise GpuStackError(f"CUDA version {version!r} is not MAJOR.MINOR (e.g. '12.8')")
    return int(m.group(1)), int(m.group(2))


def cuda_major_problems(major: int, gpus: Any, variable: str) -> list[str]:
    """Refusals for a CUDA major on a host's GPUs and loaded driver (empty when it fits)."""
    fact = normalise_gpu_fact(gpus)
    ccs, _ = _gpu_summary(fact["devices"])
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


def cuda_plan(gpus: Any, os_facts: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """What the ``cuda_toolkit`` role does. options: enabled, version, source, repo_url, repo_key_url."""
    fact = normalise_gpu_fact(gpus)
    enabled = _bool(options.get("enabled", False))
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
    if source not in DRIVER_SOURCES:
        errors.append(f"cuda_toolkit_source is {source!r}; use one of {', '.join(DRIVER_SOURCES)}")
        return plan
    try:
        target = os_target(
            str(os_facts.get("distribution", "")),
            str(os_facts.get("distribution_version", "")),
            str(os_facts.get("architecture", "x86_64")),
        )
    except GpuStackError as exc:
        errors.append(str(exc))
        return plan
    errors.extend(cuda_major_problems(major, fact, "cuda_toolkit_version"))
    plan["pkg"] = target.pkg
    if source == "distro":
        have = DISTRO_CUDA.get(target.key)
        if have is None:
            errors.append(
                f"{target.key} has no CUDA toolkit in its own repositories: set cuda_toolkit_source: nvidia"
            )
        elif have != f"{major}.{minor}":
            errors.append(
                f"{target.key}'s own CUDA toolkit is {have}, not {major}.{minor}: "
                f"set cuda_toolkit_version: '{have}' "
                "or cuda_toolkit_source: nvidia"
            )
        plan.update(
            packages=["nvidia-cuda-toolkit"], home="/usr/lib/nvidia-cuda-toolkit", bin_dir="", lib_dir=""
        )
    else:
        home = f"/usr/local/cuda-{major}.{minor}"
        plan.update(
            packages=[f"cuda-toolkit-{major}-{minor}"],
            repo=nvidia_repo(
                target, str(options.get("repo_url") or ""), str(options.get("repo_key_url") or "")
            ),
            home=home,
            bin_dir=f"{home}/bin",
            lib_dir=f"{home}/lib64",
        )
    if not errors:
        plan.update(action="install", reason=f"CUDA toolkit {major}.{minor} from {source}")
    plan["version"] = f"{major}.{minor}"
    return plan


# --------------------------------------------------------------------------------------------------
# NCCL
# --------------------------------------------------------------------------------------------------

NCCL_DEBUG_LEVELS = ("", "VERSION", "WARN", "INFO", "ABORT", "TRACE")
_ENV_KEY_RE = re.compile(r"^(NCCL|GLOO|UCX|TORCH_NCCL|TORCH_DISTRIBUTED)_[A-Z0-9_]+$")


def iface_for_ip(interfaces: Mapping[str, Any], ip: str) -> str:
    """The interface that carries ``ip``.

    ``interfaces``: {name: ansible_facts[name]} (keys ipv4 / ipv4_secondaries).
    """
    for name, data in sorted(interfaces.items()):
        if not isinstance(data, Mapping):
            continue
        addrs = []
        for key in ("ipv4", "ipv4_secondaries"):
            v = data.get(key)
            if isinstance(v, Mapping):
                addrs.append(v)
            elif isinstance(v, list):
                addrs.extend(a for a in v if isinstance(a, Mapping))
        if any(a.get("address") == ip for a in addrs):
            return str(data.get("device") or name)
    return ""


def host_ifaces(
    hosts: Mapping[str, Mapping[str, Any]],
    ip_key: str = "r1deploy_node_ip",
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Each host's interface for its cluster address.

    ``hosts``: {host: that host's variables (Ansible hostvars), read: ``ansible_facts`` and ``ip_key``};
    ``overrides``: {host: address} replacing ``ip_key`` (a per-host nccl_node_ip).
    Returns {"ifaces": {host: name or ""}, "errors": [...]}.
    """
    ifaces: dict[str, str] = {}
    errors: list[str] = []
    for host in sorted(hosts):
        hv = hosts[host]
        facts = hv.get("ansible_facts") or {}
        ip = str((overrides or {}).get(host) or hv.get(ip_key) or "")
        if not facts.get("interfaces"):
            errors.append(
                f"{host}: no network facts (a --limit run without cached facts): run once without --limit, "
                "or set nccl_socket_ifname explicitly"
            )
            ifaces[host] = ""
            continue
        if not ip:
            errors.append(f"{host}: {ip_key} is not set: set it in the inventory (docs/architecture.md)")
            ifaces[host] = ""
            continue
        interfaces = {n: facts.get(n.replace("-", "_").replace(".", "_")) for n in facts["interfaces"]}
        ifaces[host] = iface_for_ip(interfaces, ip)
    return {"ifaces": ifaces, "errors": errors}


def nccl_socket_ifname(host_ifaces: Mapping[str, str], requested: str) -> dict[str, Any]:
    """``NCCL_SOCKET_IFNAME`` for the cluster.

    vLLM's Ray executor copies the head's ``NCCL_*`` variables to every worker, so the value must be
    valid on all hosts. ``auto``: the exact names of the interfaces that carry each host's
    ``r1deploy_node_ip`` (``=eth1`` or ``=eth1,ens5``). ``host_ifaces``: {host: interface or ""}.
    """
    if requested != "auto":
        return {"value": requested, "errors": []}
    missing = sorted(h for h, i in host_ifaces.items() if not i)
    if missing:
        return {
            "value": "",
            "errors": [
                f"no interface carries r1deploy_node_ip on {', '.join(missing)}: fix r1deploy_node_ip or set "
                "nccl_socket_ifname (and nccl_gloo_socket_ifname) for those hosts"
            ],
        }
    names = sorted(set(host_ifaces.values()))
    return {"value": "=" + ",".join(names) if names else "", "errors": []}


def nccl_env(options: Mapping[str, Any], host_iface: str, cluster_ifname: str) -> dict[str, Any]:
    """The ordered environment of /etc/r1deploy/nccl.env and any refusals.

    options: socket_ifname, gloo_socket_ifname, ib_hca, ib_disable, debug, debug_subsys, nvls_enable,
    extra (dict).
    """
    errors: list[str] = []
    env: dict[str, str] = {}
    sock = str(options.get("socket_ifname", "auto"))
    env_sock = cluster_ifname if sock == "auto" else sock
    if env_sock:
        env["NCCL_SOCKET_IFNAME"] = env_sock
    gloo = str(options.get("gloo_socket_ifname", "auto"))
    # GLOO takes exact interface names (no NCCL-style prefixes); vLLM does not copy it to Ray workers,
    # so each host names its own.
    gloo_val = host_iface if gloo == "auto" else gloo
    if gloo_val:
        env["GLOO_SOCKET_IFNAME"] = gloo_val
    hca = str(options.get("ib_hca", "") or "")
    if hca:
        env["NCCL_IB_HCA"] = hca
    ib_disable = options.get("ib_disable", "")
    if str(ib_disable) != "":
        env["NCCL_IB_DISABLE"] = "1" if _bool(ib_disable) else "0"
    nvls = options.get("nvls_enable", "")
    if str(nvls) != "":
        env["NCCL_NVLS_ENABLE"] = "1" if _bool(nvls) else "0"
    debug = str(options.get("debug", "") or "").upper()
    if debug not in NCCL_DEBUG_LEVELS:
        errors.append(f"nccl_debug is {debug!r}; use '' (off) or one of {', '.join(NCCL_DEBUG_LEVELS[1:])}")
    elif debug:
        env["NCCL_DEBUG"] = debug
        subsys = str(options.get("debug_subsys", "") or "")
        if subsys:
            env["NCCL_DEBUG_SUBSYS"] = subsys
    for key, value in (options.get("extra") or {}).items():
        if not _ENV_KEY_RE.match(str(key)):
            errors.append(
                f"nccl_env_extra key {key!r} is not an NCCL/GLOO/UCX/TORCH_NCCL variable name: remove it"
            )
            continue
        text = str(value)
        if "\n" in text or '"' in text:
            errors.append(f"nccl_env_extra value of {key} contains a newline or a double quote")
            continue
        env[str(key)] = text
    for key in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_HCA"):
        if key in env and not re.fullmatch(r"[\^=]?[A-Za-z0-9_.:@\-]+(,[A-Za-z0-9_.:@\-]+)*", env[key]):
            errors.append(f"{key} value {env[key]!r} is not an interface list")
    return {"env": env, "errors": errors}


def libnccl_plan(gpus: Any, os_facts: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """libnccl packages matching a CUDA major. options: enabled, dev, cuda_major, repo_url, repo_key_url."""
    fact = normalise_gpu_fact(gpus)
    plan: dict[str, Any] = {
        "action": "none",
        "reason": "",
        "errors": [],
        "packages": [],
        "repo": {},
        "pkg": "",
    }
    if fact["count"] == 0:
        plan.update(action="skip", reason="CPU-only host (r1deploy_gpus.count is 0): no libnccl")
        return plan
    if not _bool(options.get("enabled", False)):
        plan.update(action="skip", reason="nccl_libnccl_enabled is false: torch's wheels bring NCCL")
        return plan
    try:
        major = int(str(options.get("cuda_major", "12")))
    except ValueError:
        plan["errors"].append(f"nccl_cuda_major is {options.get('cuda_major')!r}; use a number such as 12")
        return plan
    plan["errors"].extend(cuda_major_problems(major, fact, "nccl_cuda_major"))
    try:
        target = os_target(
            str(os_facts.get("distribution", "")),
            str(os_facts.get("distribution_version", "")),
            str(os_facts.get("architecture", "x86_64")),
        )
    except GpuStackError as exc:
        plan["errors"].append(str(exc))
        return plan
    dev = _bool(options.get("dev", False))
    if target.pkg == "apt":
        pkgs = ["libnccl2"] + (["libnccl-dev"] if dev else [])
        # apt_preferences: a version pin is a prefix ("580.*") or a /regex/, not a glob.
        pin = f"/\\+cuda{major}\\./"
    else:
        pkgs = ["libnccl"] + (["libnccl-devel"] if dev else [])
        pin = f"*+cuda{major}.*"
    plan.update(
        action="install" if not plan["errors"] else "none",
        reason=f"libnccl built for CUDA {major} from NVIDIA's repository",
        packages=pkgs,
        version_glob=pin,
        cuda_major=major,
        pkg=target.pkg,
        repo=nvidia_repo(target, str(options.get("repo_url") or ""), str(options.get("repo_key_url") or "")),
    )
    return plan


def libnccl_mismatched(installed: Mapping[str, Any], packages: Sequence[str], cuda_major: int) -> list[str]:
    """Installed libnccl packages (``package_facts``) built for another CUDA major than ``cuda_major``."""
    wrong = []
    for name in packages:
        versions = [str(v.get("version", "")) for v in installed.get(name) or []]
        if any(f"+cuda{cuda_major}." not in v for v in versions):
            wrong.append(name)
    return wrong


# --------------------------------------------------------------------------------------------------
# NCCL health check
# --------------------------------------------------------------------------------------------------

# Bus-bandwidth floors in GB/s at the largest message size, per link type. Deliberately low: the check
# proves the fabric is the expected kind and not broken, it is not a benchmark. Sources: NCCL's
# nccl-tests PERFORMANCE.md (busbw), typical V100 numbers: NVLink ~130, PCIe P2P ~10, 100 Gb IB ~11.
DEFAULT_FLOORS_GBPS: dict[str, float] = {
    "net_ib": 5.0,
    "net_socket": 0.5,
    "p2p": 5.0,
    "shm": 2.0,
    "gloo": 0.01,
}


def nccl_check_layout(gpu_counts: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """Ranks of the all-reduce check: one process per GPU on GPU hosts, one gloo process per CPU host.

    ``gpu_counts``: {host: r1deploy_gpus.count}; ``order``: hosts, the rendezvous host (Ray head) first.
    """
    hosts = [h for h in dict.fromkeys(order) if h in gpu_counts]  # first mention wins
    counts = {h: int(gpu_counts[h] or 0) for h in hosts}
    errors: list[str] = []
    with_gpu = [h for h in hosts if counts[h] > 0]
    if with_gpu and len(with_gpu) != len(hosts):
        errors.append(
            "some GPU-group hosts have GPUs and some have none ("
            + ", ".join(h for h in hosts if counts[h] == 0)
            + "): an NCCL all-reduce needs a GPU in every process; fix the inventory or the hosts"
        )
    backend = "nccl" if with_gpu else "gloo"
    layout: dict[str, dict[str, int]] = {}
    offset = 0
    for node_rank, h in enumerate(hosts):
        nproc = counts[h] if backend == "nccl" else 1
        layout[h] = {"node_rank": node_rank, "nproc": nproc, "rank_offset": offset}
        offset += nproc
    if offset < 2 and not errors:
        errors.append("the check needs at least two processes (two GPUs, or two CPU-only hosts)")
    return {
        "backend": backend,
        "nnodes": len(hosts),
        "world_size": offset,
        "master": hosts[0] if hosts else "",
        "hosts": layout,
        "errors": errors,
    }


def parse_nccl_transports(log: str) -> dict[str, Any]:
    """Which transports NCCL chose, from ``NCCL_DEBUG=INFO`` output."""
    vias = re.findall(r"\bvia\s+([A-Za-z]+(?:/[A-Za-z]+)?)", log or "")
    network = re.findall(r"NCCL INFO Using network (\w+)", log or "")
    kinds = sorted({v.upper() for v in vias})
    net = ""
    if any(k.startswith("NET/IB") for k in kinds):
        net = "IB"
    elif any(k.startswith("NET/SOCKET") for k in kinds):
        net = "Socket"
    elif any(k.startswith("NET/") for k in kinds):
        net = next(k for k in kinds if k.startswith("NET/")).split("/", 1)[1]
    return {"vias": kinds, "network": network[0] if network else "", "net": net}


def nccl_link_type(backend: str, nnodes: int, transports: Mapping[str, Any]) -> str:
    """The slowest link the all-reduce crossed: net_ib, net_socket, p2p, shm or gloo."""
    if backend == "gloo":
        return "gloo"
    vias = transports.get("vias") or []
    if nnodes > 1 or transports.get("net"):
        return "net_ib" if transports.get("net") == "IB" else "net_socket"
    if any(v.startswith("SHM") for v in vias):
        return "shm"
    return "p2p"


def nccl_verdict(
    results: Sequence[Mapping[str, Any]],
    backend: str,
    nnodes: int,
    log: str = "",
    floors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pass/fail of an all-reduce run against the floor of the link type it used.

    ``results``: [{"size_bytes", "busbw_gbps", "algbw_gbps", "time_us"}] from the check script.
    """
    table = dict(DEFAULT_FLOORS_GBPS)
    table.update({k: float(v) for k, v in (floors or {}).items()})
    transports = parse_nccl_transports(log)
    link = nccl_link_type(backend, nnodes, transports)
    rows = sorted(results, key=lambda r: int(r["size_bytes"]))
    if not rows:
        return {
            "ok": False,
            "link": link,
            "transports": transports,
            "floor_gbps": table[link],
            "busbw_gbps": 0.0,
            "message": "no all-reduce result: the check did not run to completion",
        }
    largest = rows[-1]
    bw = float(largest["busbw_gbps"])
    floor = table[link]
    ok = bw >= floor
    label = {
        "net_ib": "NET/IB",
        "net_socket": "NET/Socket",
        "p2p": "P2P",
        "shm": "SHM",
        "gloo": "gloo (CPU)",
    }[link]
    msg = (
        f"{label}: bus bandwidth {bw:.2f} GB/s at {_size(int(largest['size_bytes']))} "
        f"{'>=' if ok else '<'} floor {floor:.2f} GB/s"
    )
    if backend == "nccl" and nnodes > 1 and link == "net_socket" and table.get("net_ib", 0) and not ok:
        msg += " (NCCL fell back to TCP sockets: check NCCL_IB_HCA and that the IB/RoCE devices are visible)"
    return {
        "ok": ok,
        "link": link,
        "transports": transports,
        "floor_gbps": floor,
        "busbw_gbps": bw,
        "message": msg,
    }


def nccl_check_report(
    runs: Mapping[str, Mapping[str, Any]],
    layout: Mapping[str, Any],
    floors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Combine every host's check-script run (Ansible command results) into one verdict.

    Returns {"ok", "verdict", "failures": ["host: ..."], "table": [lines]}.
    """
    failures: list[str] = []
    results: list[Mapping[str, Any]] = []
    logs: list[str] = []
    for host in sorted(runs):
        run = runs[host] or {}
        stdout = str(run.get("stdout") or "").strip()
        try:
            out = json.loads(stdout) if stdout.startswith("{") else None
        except ValueError:
            out = None
        if out is None:
            why = str(run.get("stderr") or run.get("msg") or "no output").strip()
            failures.append(f"{host}: the check script failed: {why[-800:]}")
            continue
        failures += [f"{host}: {e}" for e in out.get("errors") or []]
        logs += [str(line) for line in out.get("nccl_log") or []]
        if host == layout.get("master"):
            results = list(out.get("results") or [])
    verdict = nccl_verdict(
        results, str(layout.get("backend")), int(layout.get("nnodes") or 1), "\n".join(logs), floors
    )
    return {
        "ok": verdict["ok"] and not failures,
        "verdict": verdict,
        "failures": failures,
        "table": format_results(results) if results else [],
    }


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n} B"


def format_results(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Human-readable lines: size, time, algbw, busbw."""
    out = [f"{'size':>10} {'time_us':>10} {'algbw GB/s':>11} {'busbw GB/s':>11}"]
    for r in sorted(results, key=lambda r: int(r["size_bytes"])):
        out.append(
            f"{_size(int(r['size_bytes'])):>10} {float(r['time_us']):>10.1f} "
            f"{float(r['algbw_gbps']):>11.3f} {float(r['busbw_gbps']):>11.3f}"
        )
    return out
