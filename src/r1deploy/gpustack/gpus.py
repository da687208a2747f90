"""The GPU fact and compute capabilities: what every GPU-stack rule reads about a host's GPUs.

The architecture thresholds are named here once (``VOLTA_CC``, ``TURING_CC``, ``BLACKWELL_CC``); the
driver, CUDA and planner rules import them instead of typing ``(7, 5)`` again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from r1deploy.planner.gpus import MIN_CC, VOLTA_MAX_CC, parse_cc

CC = tuple[int, int]

# Architecture boundaries by compute capability.
VOLTA_CC: CC = MIN_CC  # V100, TITAN V: the GPUs r1deploy is built for
TURING_CC: CC = VOLTA_MAX_CC  # first GPUs with the GPU System Processor (GSP)
BLACKWELL_CC: CC = (10, 0)

# lspci shows chip codes and board names, not compute capabilities. Used only when the fact came
# from lspci (no driver yet); nvidia-smi's compute_cap always wins.
_NAME_CC: tuple[tuple[str, CC], ...] = (
    (r"\bGB\d{3}|\bB[123]00\b|Blackwell|RTX 50\d\d", BLACKWELL_CC),
    (r"\bGH100|\bGH200|\bH100|\bH200|\bH800|\bH20\b", (9, 0)),
    (r"\bAD10\d|\bL40|\bL4\b|\bL20\b|RTX 40\d\d|Ada Generation", (8, 9)),
    (r"\bGA100|\bA100|\bA800|\bA30\b", (8, 0)),
    (r"\bGA10[2-7]|\bA10\b|\bA16\b|\bA40\b|\bA2\b|RTX A\d+|RTX 30\d\d", (8, 6)),
    (r"\bTU1\d\d|\bT4\b|Quadro RTX|TITAN RTX|RTX 20\d\d", TURING_CC),
    (r"\bGV10\d|\bV100|TITAN V\b", VOLTA_CC),
    (r"\bGP10\d|\bP100|\bP40\b|\bP4\b|\bP6000", (6, 0)),
)


class GpuStackError(ValueError):
    """Input that no rule accepts; the message names the variable and the fix."""


def as_bool(value: Any) -> bool:
    """Ansible's truthy strings ("yes", "true", "1", "on") as a bool."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


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
    """The driver branch of a version string ("580.95.05" -> 580), None when there is none."""
    m = re.match(r"\s*(\d+)\.", version or "")
    return int(m.group(1)) if m else None


def gpu_summary(devices: Sequence[Mapping[str, Any]]) -> tuple[list[CC], list[str]]:
    """The compute capabilities of the devices, and the names of those whose architecture is unknown."""
    ccs: list[CC] = []
    unknown: list[str] = []
    for d in devices:
        cc = device_cc(d)
        if cc is None:
            unknown.append(str(d.get("name") or f"GPU {d.get('index', '?')}"))
        else:
            ccs.append(cc)
    return ccs, unknown
