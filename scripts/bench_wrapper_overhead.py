#!/usr/bin/env python3
"""Benchmark: what the r1deploy CLI costs on top of plain ansible-playbook, on the same no-op run.

    .venv/bin/python scripts/bench_wrapper_overhead.py -i inventories/lab [--repeat 10] [--json]

The no-op playbook pings every host without gathering facts. Each round runs, in rotating order,
``ansible-playbook -i INV noop.yml``, ``r1deploy run noop.yml -i INV --json`` and the same with the
plain progress view, each as its own process, exactly as an operator would start them. A warm-up
round (SSH ControlPersist, page cache) is not counted. Reported per variant: median/mean/min/max
wall seconds and the children's CPU seconds (user+sys, less sensitive to a busy machine); the ratio
of medians to plain ansible-playbook and the absolute overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOOP = """---
- name: No-op on every host
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return wall, cpu, proc.returncode


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", required=True)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    inventory = str(Path(args.inventory).resolve())

    with tempfile.TemporaryDirectory(prefix="r1deploy-overhead-") as tmp:
        playbook = Path(tmp, "noop.yml")
        playbook.write_text(NOOP)
        env = dict(os.environ)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
        env["R1DEPLOY_STATE_DIR"] = str(Path(tmp, "state"))  # keep the user's run list clean
        variants = {
            "ansible-playbook": [str(BIN / "ansible-playbook"), "-i", inventory, str(playbook)],
            "r1deploy --json": [str(BIN / "r1deploy"), "run", str(playbook), "-i", inventory, "--json"],
            "r1deploy plain": [str(BIN / "r1deploy"), "run", str(playbook), "-i", inventory],
        }
        names = list(variants)
        for name in names:  # warm-up, not counted
            timed(variants[name], env)
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.repeat):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                w, c, _ = timed(variants[name], env)
                wall[name].append(w)
                cpu[name].append(c)
                if not args.json:
                    print(f"round {i + 1}/{args.repeat} {name:<17} wall {w:6.2f}s cpu {c:6.2f}s", flush=True)

    base_wall = statistics.median(wall["ansible-playbook"])
    base_cpu = statistics.median(cpu["ansible-playbook"])
    report = {
        "benchmark": "r1deploy wrapper overhead vs ansible-playbook, same no-op playbook, same lab",
        "inventory": inventory,
        "repeat": args.repeat,
        "load_average": os.getloadavg(),
        "variants": {
            name: {
                "wall_s": stats(wall[name]),
                "cpu_s": stats(cpu[name]),
                "wall_ratio": round(statistics.median(wall[name]) / base_wall, 3),
                "wall_overhead_s": round(statistics.median(wall[name]) - base_wall, 3),
                "cpu_ratio": round(statistics.median(cpu[name]) / base_cpu, 3),
                "cpu_overhead_s": round(statistics.median(cpu[name]) - base_cpu, 3),
            }
            for name in names
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"\n{'variant':<18}{'wall median':>12}{'ratio':>8}{'+s':>8}"
            f"{'cpu median':>12}{'ratio':>8}{'+s':>8}"
        )
        for name, v in report["variants"].items():
            print(
                f"{name:<18}{v['wall_s']['median']:>11.2f}s{v['wall_ratio']:>8.2f}{v['wall_overhead_s']:>8.2f}"
                f"{v['cpu_s']['median']:>11.2f}s{v['cpu_ratio']:>8.2f}{v['cpu_overhead_s']:>8.2f}"
            )
        print(f"load average {report['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
