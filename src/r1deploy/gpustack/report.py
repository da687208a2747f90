"""How the GPU stack prints numbers: the NCCL check's results table and byte sizes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def size_text(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n} B"


def format_results(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Human-readable lines: size, time, algbw, busbw."""
    out = [f"{'size':>10} {'time_us':>10} {'algbw GB/s':>11} {'busbw GB/s':>11}"]
    for r in sorted(results, key=lambda r: int(r["size_bytes"])):
        out.append(
            f"{size_text(int(r['size_bytes'])):>10} {float(r['time_us']):>10.1f} "
            f"{float(r['algbw_gbps']):>11.3f} {float(r['busbw_gbps']):>11.3f}"
        )
    return out
