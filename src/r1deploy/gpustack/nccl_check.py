"""The NCCL health check (playbooks/nccl_check.yml): the ranks of the all-reduce, the link type NCCL
chose, and the verdict against that link's bandwidth floor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from r1deploy.gpustack.report import format_results, size_text

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
        f"{label}: bus bandwidth {bw:.2f} GB/s at {size_text(int(largest['size_bytes']))} "
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
