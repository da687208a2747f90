#!/usr/bin/env python3
"""Wait until a Ray cluster has every expected node and GPU; print the cluster as JSON.

Run with the serving venv's python on a node of the cluster, as the service user. On timeout it
names the nodes that are missing, so the operator knows which worker to look at. The Ray settings
of the node (token authentication: RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH) come from its ray.env unless
the environment already has them. The JSON it prints has ``at``: the Unix time the cluster was
complete (vLLM started before that moment runs on an older cluster).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


def load_env_file(path: str) -> None:
    """Set the RAY_* variables of a systemd EnvironmentFile that the environment does not set."""
    if not path or not Path(path).is_file():
        return
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key.strip().startswith("RAY_"):
            os.environ.setdefault(key.strip(), value.strip().strip('"'))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True, help="HEAD_IP:GCS_PORT")
    parser.add_argument("--nodes", default="", help="comma-separated node IPs that must be alive")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs the cluster must offer")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--env-file", default="/etc/r1deploy/ray.env", help="the node's Ray settings")
    args = parser.parse_args()
    load_env_file(args.env_file)
    expected = {ip for ip in args.nodes.split(",") if ip}

    import ray

    deadline = time.monotonic() + args.timeout
    ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    try:
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            ips = sorted({n["NodeManagerAddress"] for n in alive})
            gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in alive)
            missing = sorted(expected - set(ips))
            if not missing and gpus >= args.gpus:
                # One line, the last of stdout (Ray may print its own lines before it).
                print(
                    json.dumps(
                        {
                            "nodes": ips,
                            "gpus": gpus,
                            "cpus": sum(n.get("Resources", {}).get("CPU", 0) for n in alive),
                            "at": round(time.time(), 3),
                            # Node IDs per address: a node that rejoined has a new one.
                            "node_ids": {
                                ip: sorted(n["NodeID"] for n in alive if n["NodeManagerAddress"] == ip)
                                for ip in ips
                            },
                        }
                    )
                )
                return 0
            if time.monotonic() > deadline:
                print(
                    f"Ray cluster at {args.address} incomplete after {args.timeout:.0f}s: "
                    f"missing nodes {', '.join(missing) or 'none'}; GPUs {gpus:g} of {args.gpus:g}. "
                    "Check `systemctl status ray-worker` and `journalctl -u ray-worker` on the missing "
                    "nodes, and that their ports are open from the head.",
                    file=sys.stderr,
                )
                return 1
            time.sleep(2)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
