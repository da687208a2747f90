"""Where vLLM's workers sit in the Ray cluster: nodes, placement groups, vLLM worker actors.

Run with the serving venv's Python (it imports ray) on a node of the cluster:

    /opt/r1deploy/venv/bin/python scripts/gpu_proof/ray_report.py --address HEAD_IP:6667 [--tp 2 --pp 2]

Prints one JSON object. Uses the GCS only (no dashboard): ``ray.nodes()``,
``ray.util.placement_group_table()`` and the actor table. vLLM names its Ray workers
``vllm_Worker_<id>[_TP<t>][_PP<p>]`` (vllm/v1/executor/ray_utils.py build_actor_name), so the actor
table says on which node each pipeline stage runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    args = ap.parse_args()

    import ray

    ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    try:
        nodes = []
        ip_of = {}
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            res = n.get("Resources", {})
            ip_of[n["NodeID"]] = n["NodeManagerAddress"]
            nodes.append(
                {
                    "node_id": n["NodeID"][:12],
                    "ip": n["NodeManagerAddress"],
                    "gpus": res.get("GPU", 0),
                    "cpus": res.get("CPU", 0),
                    "head": "node:__internal_head__" in res,
                    "raylet_port": n.get("NodeManagerPort"),
                    "object_manager_port": n.get("ObjectManagerPort"),
                }
            )
        gpu_total = sum(n["gpus"] for n in nodes)
        pgs = []
        for pg_id, pg in ray.util.placement_group_table().items():
            bundles = pg.get("bundles", {})
            b2n = pg.get("bundles_to_node_id", {})
            gpus = sum(b.get("GPU", 0) for b in bundles.values())
            per_node = defaultdict(float)
            for idx, b in bundles.items():
                per_node[ip_of.get(b2n.get(idx, ""), "?")] += b.get("GPU", 0)
            pgs.append(
                {
                    "id": pg_id[:12],
                    "state": pg.get("state"),
                    "strategy": pg.get("strategy"),
                    "bundles": len(bundles),
                    "gpus": gpus,
                    "gpus_per_node_ip": dict(per_node),
                    "bundle_nodes": {str(i): ip_of.get(b2n.get(i, ""), "?") for i in bundles},
                }
            )
        actors = []
        try:
            from ray._private.state import actors as actor_table

            table = actor_table()
        except Exception as exc:  # internal API; the report still has nodes and placement groups
            table = {}
            actors.append({"error": f"actor table unavailable: {exc!r}"})
        for a in table.values():
            name = a.get("Name") or ""
            if not name.startswith("vllm_Worker") or a.get("State") != "ALIVE":
                continue
            m_tp = re.search(r"_TP(\d+)", name)
            m_pp = re.search(r"_PP(\d+)", name)
            addr = a.get("Address", {})
            actors.append(
                {
                    "name": name,
                    "tp_rank": int(m_tp.group(1)) if m_tp else 0,
                    "pp_stage": int(m_pp.group(1)) if m_pp else 0,
                    "node_ip": addr.get("IPAddress") or ip_of.get(addr.get("NodeID", ""), "?"),
                    "pid": a.get("Pid"),
                }
            )
        workers = [a for a in actors if "name" in a]
        stage_nodes = defaultdict(set)
        for a in workers:
            stage_nodes[a["pp_stage"]].add(a["node_ip"])
        created = [p for p in pgs if p["state"] == "CREATED"]
        want = args.tp * args.pp
        verdict = {
            "nodes": len(nodes),
            "gpus_in_cluster": gpu_total,
            "placement_group_gpus": max((p["gpus"] for p in created), default=0),
            "placement_group_on_every_gpu": any(p["gpus"] == gpu_total == want for p in created),
            "vllm_workers": len(workers),
            "workers_expected": want,
            "stage_nodes": {str(k): sorted(v) for k, v in sorted(stage_nodes.items())},
            "stages_on_different_nodes": (
                len(stage_nodes) == args.pp
                and all(len(v) == 1 for v in stage_nodes.values())
                and len({next(iter(v)) for v in stage_nodes.values()}) == args.pp
            )
            if args.pp > 1
            else None,
        }
        print(
            json.dumps({"nodes": nodes, "placement_groups": pgs, "vllm_workers": actors, "verdict": verdict})
        )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
