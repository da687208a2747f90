"""What a host reports about its driver (Secure Boot, the loaded module, nvidia-smi), and the check of
a loaded driver against the plan after the reboot.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from r1deploy import gpufacts
from r1deploy.gpustack.driver import allowed_flavours
from r1deploy.gpustack.gpus import branch_of, cc_text
from r1deploy.planner.gpus import parse_cc

# The query the verify step runs: the GPU fact's own (r1deploy.gpufacts), so one parser reads both.
SMI_QUERY = ",".join(gpufacts.QUERY_FIELDS)


def secure_boot_state(efi_dir_exists: bool, efivar_b64: str = "") -> str:
    """From ``/sys/firmware/efi`` and the SecureBoot EFI variable (base64 of its bytes)."""
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
