#!/usr/bin/env python3
"""Wait until a Ray cluster has every expected node and GPU; print the cluster as JSON.

Run with the serving venv's python on a node of the cluster. On timeout it names the nodes that
are missing, so the operator knows which worker to look at.
"""

import argparse
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True, help="HEAD_IP:GCS_PORT")
    parser.add_argument("--nodes", default="", help="comma-separated node IPs that must be alive")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs the cluster must offer")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
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
                print(
                    json.dumps(
                        {
                            "nodes": ips,
                            "gpus": gpus,
                            "cpus": sum(n.get("Resources", {}).get("CPU", 0) for n in alive),
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
