"""The ``r1deploy_gpus`` fact: parse ``nvidia-smi``, ``lspci`` and ``/proc/driver/nvidia/version``.

Schema (docs/architecture.md)::

    {"source": "nvidia-smi" | "lspci" | "none", "count": N,
     "devices": [{"index", "name", "compute_capability", "memory_mib", "pci_bus_id", "persistence_mode"}],
     "driver": {"version": "580.173.02" | "", "flavour": "proprietary" | "open" | "none"},
     "nvswitch": bool}

From lspci only ``index``, ``name`` and ``pci_bus_id`` are known. The Ansible module
``r1deploy_gpu_facts`` collects the raw outputs on a host (:func:`collect` does the same here) and the
filter ``r1deploy_gpu_facts`` turns them into the fact with :func:`build_fact`.

On a host: ``python -m r1deploy.gpufacts`` prints the fact as JSON (``--raw`` adds the raw outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from r1deploy.planner.gpus import match_smi_name

# NVIDIA's documented query (nvidia-smi --help-query-gpu); compute_cap exists since driver R510.
QUERY_FIELDS = (
    "index",
    "name",
    "compute_cap",
    "memory.total",
    "driver_version",
    "persistence_mode",
    "pci.bus_id",
)
QUERY_FIELDS_OLD = tuple(f for f in QUERY_FIELDS if f != "compute_cap")
NVIDIA_VENDOR = "10de"
# PCI classes: 0300 VGA compatible controller, 0302 3D controller (data-centre GPUs), 0680 bridge (NVSwitch).
GPU_CLASSES = ("0300", "0302")
NVSWITCH_CLASS = "0680"
PROC_VERSION = "/proc/driver/nvidia/version"

# PCI device ids of the V100 family (pci.ids), so a sysfs scan without lspci still names the board.
PCI_NAMES = {
    "1db1": "GV100GL [Tesla V100 SXM2 16GB]",
    "1db4": "GV100GL [Tesla V100 PCIe 16GB]",
    "1db5": "GV100GL [Tesla V100 SXM2 32GB]",
    "1db6": "GV100GL [Tesla V100 PCIe 32GB]",
    "1db8": "GV100GL [Tesla V100 SXM3 32GB]",
    "1df6": "GV100GL [Tesla V100S PCIe 32GB]",
}


class FactError(ValueError):
    """nvidia-smi printed something that is not the documented CSV."""


def _na(value: str) -> bool:
    return value.strip() in ("", "[N/A]", "N/A", "[Not Supported]", "[Unknown Error]")


def parse_nvidia_smi(stdout: str, fields: tuple[str, ...] = QUERY_FIELDS) -> list[dict[str, Any]]:
    """``--format=csv,noheader,nounits`` rows -> device dicts (also accepts values with units)."""
    devices = []
    for lineno, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(fields):
            raise FactError(
                f"nvidia-smi line {lineno}: {len(cells)} fields, expected {len(fields)}: {line!r}"
            )
        row = dict(zip(fields, cells, strict=True))
        name = row["name"]
        cc = row.get("compute_cap", "")
        if _na(cc):
            known = match_smi_name(name)
            cc = known.compute_capability if known else ""
        mem_text = re.sub(r"\s*MiB$", "", row["memory.total"])
        try:
            index = int(row["index"])
            memory = int(float(mem_text)) if not _na(mem_text) else 0
        except ValueError as exc:
            raise FactError(f"nvidia-smi line {lineno}: {exc}: {line!r}") from exc
        devices.append(
            {
                "index": index,
                "name": name,
                "compute_capability": cc,
                "memory_mib": memory,
                "pci_bus_id": row["pci.bus_id"],
                "persistence_mode": row["persistence_mode"].lower() == "enabled",
                "_driver_version": "" if _na(row["driver_version"]) else row["driver_version"],
            }
        )
    return sorted(devices, key=lambda d: d["index"])


_LSPCI_RE = re.compile(
    r"^(?P<slot>\S+)\s+(?P<cls>[^\[]*?)\s*\[(?P<code>[0-9a-f]{4})\]:\s*(?P<desc>.*?)\s*"
    r"\[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\]",
    re.IGNORECASE,
)


def parse_lspci(stdout: str) -> tuple[list[dict[str, Any]], bool]:
    """``lspci -Dnn`` -> (NVIDIA GPUs as {index, name, pci_bus_id}, NVSwitch present)."""
    devices: list[dict[str, Any]] = []
    nvswitch = False
    for line in stdout.splitlines():
        m = _LSPCI_RE.match(line.strip())
        if not m or m.group("vendor").lower() != NVIDIA_VENDOR:
            continue
        code = m.group("code").lower()
        if code == NVSWITCH_CLASS:
            nvswitch = True
        elif code in GPU_CLASSES:
            desc = m.group("desc").removeprefix("NVIDIA Corporation").strip()
            if desc in ("", "Device"):  # a sysfs scan has no pci.ids names
                desc = PCI_NAMES.get(
                    m.group("device").lower(), f"Device {NVIDIA_VENDOR}:{m.group('device').lower()}"
                )
            devices.append({"index": len(devices), "name": desc, "pci_bus_id": m.group("slot")})
    return devices, nvswitch


def parse_driver_version(text: str | None) -> tuple[str, str]:
    """/proc/driver/nvidia/version -> (version, flavour). "Open Kernel Module" means the open modules."""
    if not text or "NVRM" not in text:
        return "", "none"
    flavour = "open" if "Open Kernel Module" in text else "proprietary"
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return (m.group(1) if m else ""), flavour


def build_fact(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw outputs -> the fact. ``raw`` holds ``nvidia_smi`` {rc, stdout, fields}, ``lspci`` {rc, stdout}
    and ``proc_version`` (text or None), as the module returns them."""
    smi = raw.get("nvidia_smi") or {}
    lspci = raw.get("lspci") or {}
    version, flavour = parse_driver_version(raw.get("proc_version"))
    pci_devices, nvswitch = parse_lspci(lspci.get("stdout") or "") if lspci.get("rc") == 0 else ([], False)
    devices: list[dict[str, Any]] = []
    source = "none"
    if smi.get("rc") == 0 and (smi.get("stdout") or "").strip():
        fields = tuple(smi.get("fields") or QUERY_FIELDS)
        devices = parse_nvidia_smi(smi["stdout"], fields)
        source = "nvidia-smi" if devices else "none"
        if devices and not version:
            version = devices[0]["_driver_version"]
            flavour = flavour if flavour != "none" else "proprietary"
    if not devices and pci_devices:
        devices, source = pci_devices, "lspci"
    for d in devices:
        d.pop("_driver_version", None)
    return {
        "source": source,
        "count": len(devices),
        "devices": devices,
        "driver": {"version": version, "flavour": flavour},
        "nvswitch": nvswitch,
    }


def _run(cmd: list[str]) -> dict[str, Any]:
    if shutil.which(cmd[0]) is None:
        return {"rc": 127, "stdout": "", "stderr": f"{cmd[0]}: not found"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def sysfs_lspci(root: str = "/sys/bus/pci/devices") -> str:
    """lspci -Dnn-like lines for NVIDIA devices from sysfs (for hosts without pciutils)."""
    lines = []
    base = Path(root)
    if not base.is_dir():
        return ""
    for dev in sorted(base.iterdir()):
        try:
            vendor = (dev / "vendor").read_text().strip().removeprefix("0x").lower()
            device = (dev / "device").read_text().strip().removeprefix("0x").lower()
            cls = (dev / "class").read_text().strip().removeprefix("0x").lower()[:4]
        except OSError:
            continue
        if vendor != NVIDIA_VENDOR:
            continue
        lines.append(f"{dev.name} Class [{cls}]: NVIDIA Corporation Device [{vendor}:{device}]")
    return "\n".join(lines)


def collect() -> dict[str, Any]:
    """Run the probes on this host (what the Ansible module does remotely)."""
    fields = QUERY_FIELDS
    smi = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    if smi["rc"] != 0 and "compute_cap" in (smi["stdout"] + smi["stderr"]):
        fields = QUERY_FIELDS_OLD
        smi = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    smi["fields"] = list(fields)
    lspci = _run(["lspci", "-Dnn"])
    if lspci["rc"] == 127:
        lspci = {"rc": 0, "stdout": sysfs_lspci(), "stderr": "lspci not found: read /sys/bus/pci"}
    proc = Path(PROC_VERSION).read_text() if os.path.exists(PROC_VERSION) else None
    return {"nvidia_smi": smi, "lspci": lspci, "proc_version": proc}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m r1deploy.gpufacts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", action="store_true", help="also print the raw command outputs")
    ap.add_argument("--nvidia-smi-output", type=Path, help="parse this file instead of running nvidia-smi")
    ap.add_argument("--lspci-output", type=Path, help="parse this file instead of running lspci")
    ap.add_argument(
        "--proc-version", type=Path, help="parse this file instead of /proc/driver/nvidia/version"
    )
    args = ap.parse_args(argv)
    raw = collect() if not (args.nvidia_smi_output or args.lspci_output) else {}
    if args.nvidia_smi_output:
        raw["nvidia_smi"] = {
            "rc": 0,
            "stdout": args.nvidia_smi_output.read_text(),
            "fields": list(QUERY_FIELDS),
        }
    if args.lspci_output:
        raw["lspci"] = {"rc": 0, "stdout": args.lspci_output.read_text()}
    if args.proc_version:
        raw["proc_version"] = args.proc_version.read_text()
    fact = build_fact(raw)
    out: dict[str, Any] = {"r1deploy_gpus": fact}
    if args.raw:
        out["raw"] = raw
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
