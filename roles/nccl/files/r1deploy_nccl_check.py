#!/usr/bin/env python3
"""All-reduce across every GPU of the cluster: one process per GPU, launched on every node.

Installed by r1deploy's nccl role as /usr/local/lib/r1deploy/r1deploy_nccl_check.py and run by
playbooks/nccl_check.yml (and scripts/nccl_check_device.sh) with the serving venv's Python, which has
torch. Backend ``nccl`` on GPU hosts, ``gloo`` (one process, CPU tensors) on CPU-only hosts.

The launcher (this script without ``--worker``) starts ``--nproc`` workers with global ranks
``rank_offset .. rank_offset + nproc - 1``, captures their output (NCCL_DEBUG=INFO, so the transport
NCCL chose is in it) and prints one JSON object on stdout:

    {"node_rank", "backend", "ok", "results": [{"size_bytes", "time_us", "algbw_gbps",
     "busbw_gbps"}] (global rank 0's node only), "nccl_log": [NCCL INFO lines], "errors": [...]}

Standard library only in the launcher; the workers import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEEP_LOG_LINES = 400


def parse_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines of a systemd EnvironmentFile (comments and blanks ignored)."""
    env: dict[str, str] = {}
    if not path or not Path(path).is_file():
        return env
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip().strip('"')
    return env


def launch(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env.update(parse_env_file(args.env_file))
    if args.backend == "nccl":
        env["NCCL_DEBUG"] = "INFO"  # the transport lines the verdict reads
    errors: list[str] = []
    out: dict[str, object] = {"node_rank": args.node_rank, "backend": args.backend, "results": None}
    with tempfile.TemporaryDirectory(prefix="r1deploy-nccl-check-") as tmp:
        result_file = Path(tmp) / "result.json"
        procs = []
        for local_rank in range(args.nproc):
            rank = args.rank_offset + local_rank
            wenv = dict(
                env,
                RANK=str(rank),
                LOCAL_RANK=str(local_rank),
                WORLD_SIZE=str(args.world_size),
                MASTER_ADDR=args.master_addr,
                MASTER_PORT=str(args.master_port),
            )
            log = open(Path(tmp) / f"rank{rank}.log", "w")  # noqa: SIM115 - closed after the wait
            argv = [sys.executable, os.path.abspath(__file__), "--worker", *_worker_args(args, result_file)]
            procs.append((rank, subprocess.Popen(argv, env=wenv, stdout=log, stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + args.timeout
        timed_out = set()
        for rank, proc, log in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                timed_out.add(rank)
                errors.append(
                    f"rank {rank} did not finish within {args.timeout} s (a node that never joined?)"
                )
            log.close()
        nccl_log: list[str] = []
        for rank, proc, _ in procs:
            text = (Path(tmp) / f"rank{rank}.log").read_text(errors="replace")
            nccl_log += [ln for ln in text.splitlines() if "NCCL INFO" in ln or "NCCL WARN" in ln]
            if proc.returncode != 0 and rank not in timed_out:
                tail = "\n".join(text.strip().splitlines()[-15:])
                errors.append(f"rank {rank} exited with {proc.returncode}: {tail}")
        if result_file.exists():
            out["results"] = json.loads(result_file.read_text())
    out["nccl_log"] = nccl_log[:KEEP_LOG_LINES]
    out["errors"] = errors
    out["ok"] = not errors
    print(json.dumps(out))
    return 0 if not errors else 1


def _worker_args(args: argparse.Namespace, result_file: Path) -> list[str]:
    return [
        "--backend",
        args.backend,
        "--sizes-mib",
        *[str(s) for s in args.sizes_mib],
        "--iters",
        str(args.iters),
        "--timeout",
        str(args.timeout),
        "--result-file",
        str(result_file),
    ]


def worker(args: argparse.Namespace) -> int:
    import datetime

    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if args.backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(
        args.backend,
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=args.timeout),
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Correctness first: every rank contributes rank + 1.
    probe = torch.full((1024,), float(rank + 1), device=device)
    dist.all_reduce(probe)
    sync()
    expected = world * (world + 1) / 2
    if not torch.allclose(probe, torch.full_like(probe, expected)):
        raise SystemExit(f"all-reduce returned {probe[0].item()}, expected {expected}")

    results = []
    for mib in args.sizes_mib:
        nbytes = mib * (1 << 20)
        tensor = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        for _ in range(2):  # warm-up: connections, buffers
            dist.all_reduce(tensor)
        sync()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(tensor)
        sync()
        elapsed = torch.tensor(
            [(time.perf_counter() - start) / args.iters], dtype=torch.float64, device=device
        )
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        seconds = float(elapsed.item())
        algbw = nbytes / seconds / 1e9
        # nccl-tests' bus bandwidth for all-reduce: algbw * 2(n-1)/n
        busbw = algbw * 2 * (world - 1) / world
        results.append(
            {"size_bytes": nbytes, "time_us": seconds * 1e6, "algbw_gbps": algbw, "busbw_gbps": busbw}
        )
    if rank == 0:
        Path(args.result_file).write_text(json.dumps(results))
    dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", choices=["nccl", "gloo"], default="nccl")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--nproc", type=int, default=1, help="processes on this node (one per GPU)")
    p.add_argument("--rank-offset", type=int, default=0, help="global rank of this node's first process")
    p.add_argument("--world-size", type=int, default=1)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=29551)
    p.add_argument("--env-file", default="/etc/r1deploy/nccl.env")
    p.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 16, 64, 256])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--timeout", type=int, default=300)
    p.add_argument("--result-file", default="")
    args = p.parse_args(argv)
    return worker(args) if args.worker else launch(args)


if __name__ == "__main__":
    sys.exit(main())
