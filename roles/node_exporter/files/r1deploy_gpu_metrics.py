#!/usr/bin/env python3
"""GPU metrics for node exporter's textfile collector, from ``nvidia-smi`` and the kernel log.

Installed by the ``node_exporter`` role on GPU hosts where NVIDIA's DCGM exporter is not used, and run
by a systemd timer. Standard library only: the serving venv is not needed (nor wanted) here.

It writes ``r1deploy_gpu.prom`` atomically (temporary file + rename, as node exporter's docs ask) with
utilisation, memory, temperature, power, ECC counts, clocks, throttle reasons and XID errors per GPU.
When ``nvidia-smi`` fails (driver gone, a GPU fallen off the bus), the file still appears with
``r1deploy_gpu_collector_success 0`` so that the alert fires instead of the series going quiet.

Usage: r1deploy_gpu_metrics.py --output DIR/r1deploy_gpu.prom [--nvidia-smi CMD] [--expected-gpus N]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# `nvidia-smi --help-query-gpu` names. The throttle fields carry their pre-535 names, which every
# driver branch that still supports Volta (R470..R580) accepts.
QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "utilization.gpu",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.uncorrected.aggregate.total",
    "clocks.sm",
    "clocks.mem",
    "clocks_throttle_reasons.hw_slowdown",
    "clocks_throttle_reasons.hw_thermal_slowdown",
    "clocks_throttle_reasons.sw_thermal_slowdown",
    "clocks_throttle_reasons.sw_power_cap",
)
MIB = 1024 * 1024
MHZ = 1_000_000
# `NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus.`
XID_LINE = re.compile(r"NVRM: Xid \(PCI:(?P<bus>[0-9a-fA-F:.]+)\): (?P<xid>\d+)")
THROTTLE_REASONS = ("hw_slowdown", "hw_thermal_slowdown", "sw_thermal_slowdown", "sw_power_cap")


@dataclass(frozen=True)
class Gpu:
    index: str
    uuid: str
    name: str
    bus_id: str
    values: dict[str, float | None]


def _number(raw: str) -> float | None:
    """A value of `--format=csv,nounits`; None for `[N/A]`, `[Not Supported]` and friends."""
    raw = raw.strip()
    if raw.lower() in {"active", "enabled"}:
        return 1.0
    if raw.lower() in {"not active", "disabled"}:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        return None


def parse_query(text: str) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=QUERY_FIELDS --format=csv,noheader,nounits`."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(QUERY_FIELDS):
            raise ValueError(f"expected {len(QUERY_FIELDS)} fields, got {len(cells)}: {line!r}")
        row = dict(zip(QUERY_FIELDS, cells, strict=True))
        values = {field: _number(row[field]) for field in QUERY_FIELDS[4:]}
        gpus.append(Gpu(row["index"], row["uuid"], row["name"], _short_bus(row["pci.bus_id"]), values))
    return gpus


def _short_bus(bus_id: str) -> str:
    """`00000000:1A:00.0` (nvidia-smi) and `0000:1a:00` (kernel log) -> `0000:1a:00`, one spelling."""
    parts = bus_id.strip().lower().split(".")[0].split(":")
    if len(parts) == 2:  # bus:device without a domain
        parts = ["0000", *parts]
    return ":".join([parts[0][-4:].rjust(4, "0"), *parts[1:]])


def parse_xids(kernel_log: str) -> Counter[tuple[str, str]]:
    """Count `NVRM: Xid` lines per (PCI bus, XID code)."""
    counts: Counter[tuple[str, str]] = Counter()
    for match in XID_LINE.finditer(kernel_log):
        counts[(_short_bus(match["bus"]), match["xid"])] += 1
    return counts


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _series(name: str, labels: dict[str, str], value: float) -> str:
    label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
    return f"{name}{{{label_text}}} {_format(value)}" if label_text else f"{name} {_format(value)}"


# (metric, help, nvidia-smi field, scale to base units)
GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("r1deploy_gpu_utilization_ratio", "GPU busy fraction over the last sample.", "utilization.gpu", 0.01),
    ("r1deploy_gpu_memory_used_bytes", "GPU memory in use.", "memory.used", MIB),
    ("r1deploy_gpu_memory_total_bytes", "GPU memory the driver reports.", "memory.total", MIB),
    ("r1deploy_gpu_temperature_celsius", "GPU core temperature.", "temperature.gpu", 1.0),
    ("r1deploy_gpu_power_watts", "Board power draw.", "power.draw", 1.0),
    ("r1deploy_gpu_power_limit_watts", "Board power limit.", "power.limit", 1.0),
    (
        "r1deploy_gpu_ecc_corrected_volatile_errors",
        "Corrected ECC errors since the driver loaded.",
        "ecc.errors.corrected.volatile.total",
        1.0,
    ),
    (
        "r1deploy_gpu_ecc_uncorrected_volatile_errors",
        "Uncorrected (double-bit) ECC errors since the driver loaded.",
        "ecc.errors.uncorrected.volatile.total",
        1.0,
    ),
    (
        "r1deploy_gpu_ecc_uncorrected_aggregate_errors",
        "Uncorrected ECC errors over the board's lifetime.",
        "ecc.errors.uncorrected.aggregate.total",
        1.0,
    ),
    ("r1deploy_gpu_sm_clock_hertz", "SM clock.", "clocks.sm", MHZ),
    ("r1deploy_gpu_memory_clock_hertz", "Memory clock.", "clocks.mem", MHZ),
)


def render(
    gpus: Sequence[Gpu],
    xids: Counter[tuple[str, str]],
    *,
    success: bool,
    expected: int | None,
    now: float,
) -> str:
    """The textfile collector's file: Prometheus text exposition format, one HELP/TYPE per metric."""
    lines: list[str] = []

    def metric(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(_series(name, labels, value) for labels, value in samples)

    metric("r1deploy_gpu_collector_success", "1 when nvidia-smi answered.", [({}, 1.0 if success else 0.0)])
    metric("r1deploy_gpu_collector_timestamp_seconds", "When this file was written.", [({}, round(now))])
    metric("r1deploy_gpu_count", "GPUs nvidia-smi sees.", [({}, float(len(gpus)))])
    if expected is not None:
        metric("r1deploy_gpu_expected_count", "GPUs this host had when deployed.", [({}, float(expected))])
    metric(
        "r1deploy_gpu_info",
        "One series per GPU with its identity.",
        [({"gpu": g.index, "uuid": g.uuid, "name": g.name, "pci_bus_id": g.bus_id}, 1.0) for g in gpus],
    )
    for name, help_text, field, scale in GAUGES:
        samples = [
            ({"gpu": g.index}, value * scale) for g in gpus if (value := g.values.get(field)) is not None
        ]
        if samples:
            metric(name, help_text, samples)
    throttle = [
        ({"gpu": g.index, "reason": reason}, value)
        for g in gpus
        for reason in THROTTLE_REASONS
        if (value := g.values.get(f"clocks_throttle_reasons.{reason}")) is not None
    ]
    if throttle:
        metric("r1deploy_gpu_throttle_active", "1 while the clocks are held down for this reason.", throttle)
    # Always present (0 for every GPU without XIDs) so that `increase()` and alerts have a series.
    xid_samples = [
        ({"pci_bus_id": bus, "xid": xid}, float(count)) for (bus, xid), count in sorted(xids.items())
    ]
    metric("r1deploy_gpu_xid_errors", "NVRM Xid lines in this boot's kernel log.", xid_samples)
    metric(
        "r1deploy_gpu_xid_79_errors",
        "XID 79 (GPU has fallen off the bus) lines in this boot's kernel log.",
        [({}, float(sum(count for (_, xid), count in xids.items() if xid == "79")))],
    )
    return "\n".join(lines) + "\n"


def read_kernel_log() -> str:
    """This boot's kernel messages (journal first, dmesg as a fallback); empty when neither works."""
    for argv in (["journalctl", "-k", "-b", "-o", "cat", "--no-pager"], ["dmesg"]):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0:
            return proc.stdout
    return ""


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".r1deploy_gpu.", delete=False) as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


def collect(nvidia_smi: str, timeout: float) -> tuple[list[Gpu], bool]:
    argv = [
        *shlex.split(nvidia_smi),
        "--query-gpu=" + ",".join(QUERY_FIELDS),
        "--format=csv,noheader,nounits",
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"r1deploy-gpu-metrics: {argv[0]}: {err}", file=sys.stderr)
        return [], False
    if proc.returncode != 0:
        print(
            f"r1deploy-gpu-metrics: {argv[0]} exited {proc.returncode}: {proc.stderr.strip()}",
            file=sys.stderr,
        )
        return [], False
    try:
        return parse_query(proc.stdout), True
    except ValueError as err:
        print(f"r1deploy-gpu-metrics: {err}", file=sys.stderr)
        return [], False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="the .prom file in node exporter's textfile folder")
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="command that runs nvidia-smi")
    parser.add_argument("--expected-gpus", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    gpus, success = collect(args.nvidia_smi, args.timeout)
    text = render(
        gpus, parse_xids(read_kernel_log()), success=success, expected=args.expected_gpus, now=time.time()
    )
    write_atomically(args.output, text)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
