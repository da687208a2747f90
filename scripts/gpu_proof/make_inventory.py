#!/usr/bin/env python3
"""Generate the GPU-proof inventories: the serving layouts of issue #8 on one multi-GPU host.

Each layout is an ordinary r1deploy inventory (groups ``ray_head``/``ray_workers`` under
``gpu_nodes``) whose "hosts" are Ray nodes of one machine: each gets some of the machine's GPUs
(``CUDA_VISIBLE_DEVICES`` in its Ray environment, ``--num-gpus`` from its GPU fact), its own loopback
address as ``r1deploy_node_ip``, its own Ray ports and its own Ray temp dir, i.e. what the roles
render for separate machines. The GPU fact ``r1deploy_gpus`` of each host is built by
``r1deploy.gpufacts`` from a captured ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits``
(restricted to that host's GPUs).

Layouts (a GPU list per Ray node):

- ``tp2``    one Ray node, GPUs 0,1, TP 2 x PP 1                      (vLLM on port 8000)
- ``pp2``    one Ray node, GPUs 2,3, TP 1 x PP 2, its own Ray cluster  (port 8001; can run beside tp2)
- ``tp2pp2`` head GPUs 0,1 + worker GPUs 2,3, TP 2 x PP 2 across both Ray nodes (port 8000)
- ``tp4``    one Ray node, GPUs 0-3, TP 4 x PP 1 (issue #9: the template's TP 4 on one node)
- ``tp1``    one Ray node, GPU 0, TP 1 x PP 1 (issue #18: the V100 flags on a one-GPU machine; with
             ``--vllm-arg --distributed-executor-backend --vllm-arg ray`` and ``--vllm-env
             RAY_ADDRESS=127.0.0.2:6667`` vLLM uses the unit's Ray node, not the planner's ``uni``)

Loopback addresses other than 127.0.0.1 are used on purpose: Ray rewrites 127.0.0.1/localhost to the
host's outward address (ray._private.services.resolve_ip_for_localhost), 127.0.0.2+ it keeps.

Output: ``OUT/<layout>/hosts.yml`` and ``OUT/<layout>/group_vars/all/proof.yml`` (git-ignored when
OUT is under .cache/). Render them with ``playbooks/render_units.yml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from r1deploy import gpufacts  # noqa: E402

# Environment every proof Ray node and the vLLM server get (through ray_*_environment -> ray.env).
# NVLink multicast stays off on lent machines (device README): NCCL, PyTorch symmetric memory, NVSHMEM.
# NCCL_DEBUG=INFO puts the NCCL version and the transports in the logs. All Ray nodes of the proof
# share the loopback interface, so NCCL's and Gloo's bootstrap sockets use it (what the nccl role's
# nccl_socket_ifname: auto would pick for nodes whose r1deploy_node_ip is on lo).
PROOF_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
    "NCCL_DEBUG": "INFO",
    "NCCL_SOCKET_IFNAME": "lo",
    "GLOO_SOCKET_IFNAME": "lo",
}


# Ray ports of one node: the roles' defaults shifted by `shift` (6667/6700-6705/10001/10002-10999).
def ray_ports(role: str, shift: int, worker_ports: tuple[int, int]) -> dict[str, int]:
    p = {
        "node_manager_port": 6700 + shift,
        "object_manager_port": 6701 + shift,
        "dashboard_agent_grpc_port": 6702 + shift,
        "dashboard_agent_listen_port": 6703 + shift,
        "metrics_export_port": 6704 + shift,
        "runtime_env_agent_port": 6705 + shift,
        "min_worker_port": worker_ports[0],
        "max_worker_port": worker_ports[1],
    }
    if role == "ray_head":
        p["client_server_port"] = 10001 + shift
        p["dashboard_port"] = 8265 + shift
    return {f"{role}_{k}": v for k, v in p.items()}


# name -> (tp, pp, vllm port, [(host, group, node_ip, gpus, port shift, worker port range)])
LAYOUTS: dict[str, dict[str, Any]] = {
    "tp2": {
        "tp": 2,
        "pp": 1,
        "port": 8000,
        "nodes": [("tp2-node", "ray_head", "127.0.0.2", [0, 1], 0, (10002, 10499))],
    },
    "pp2": {
        "tp": 1,
        "pp": 2,
        "port": 8001,
        "nodes": [("pp2-node", "ray_head", "127.0.0.4", [2, 3], 100, (11002, 11499))],
    },
    "tp4": {
        "tp": 4,
        "pp": 1,
        "port": 8000,
        "nodes": [("tp4-node", "ray_head", "127.0.0.2", [0, 1, 2, 3], 0, (10002, 10499))],
    },
    "tp1": {
        "tp": 1,
        "pp": 1,
        "port": 8000,
        "nodes": [("tp1-node", "ray_head", "127.0.0.2", [0], 0, (10002, 10499))],
    },
    "tp2pp2": {
        "tp": 2,
        "pp": 2,
        "port": 8000,
        "nodes": [
            ("proof-head", "ray_head", "127.0.0.2", [0, 1], 0, (10002, 10499)),
            ("proof-worker", "ray_workers", "127.0.0.3", [2, 3], 10, (10500, 10999)),
        ],
    },
}


def host_fact(smi_lines: list[str], gpus: list[int], proc_version: str | None) -> dict[str, Any]:
    rows = [line for line in smi_lines if line.strip() and int(line.split(",")[0]) in gpus]
    if len(rows) != len(gpus):
        raise SystemExit(f"the nvidia-smi capture lists no GPU(s) {gpus}: {smi_lines}")
    raw = {
        "nvidia_smi": {"rc": 0, "stdout": "\n".join(rows) + "\n", "fields": list(gpufacts.QUERY_FIELDS)},
        "proc_version": proc_version,
    }
    return gpufacts.build_fact(raw)


def _yaml(value: Any) -> str:
    """JSON is YAML: stable and needs no PyYAML."""
    return json.dumps(value, indent=2, sort_keys=False) + "\n"


def write_layout(
    name: str,
    out: Path,
    smi_lines: list[str],
    proc: str | None,
    model: dict[str, str],
    server: dict[str, Any] | None = None,
) -> Path:
    spec = LAYOUTS[name]
    inv = out / name
    (inv / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict[str, Any]] = {"ray_head": {"hosts": {}}, "ray_workers": {"hosts": {}}}
    for host, group, ip, gpus, shift, wports in spec["nodes"]:
        role = "ray_head" if group == "ray_head" else "ray_worker"
        env = dict(PROOF_ENV, CUDA_VISIBLE_DEVICES=",".join(map(str, gpus)))
        hv: dict[str, Any] = {
            "ansible_host": ip,
            "r1deploy_node_ip": ip,
            "r1deploy_gpus": host_fact(smi_lines, gpus, proc),
            f"{role}_environment": env,
            f"{role}_extra_args": [f"--temp-dir=/tmp/ray-{host}"],
            **ray_ports(role, shift, wports),
        }
        groups[group]["hosts"][host] = hv
    # The GCS port is shared (r1deploy_ray_port): the head's, shifted like its other ports.
    head_port = 6667 + next(n[4] for n in spec["nodes"] if n[1] == "ray_head")
    hosts = {"all": {"children": {"gpu_nodes": {"children": groups}}}}
    if not groups["ray_workers"]["hosts"]:
        del groups["ray_workers"]
    (inv / "hosts.yml").write_text(
        f"# Generated by scripts/gpu_proof/make_inventory.py (layout {name}); do not edit.\n" + _yaml(hosts)
    )
    group_vars = {
        "r1deploy_ray_port": head_port,
        # The carried Ray has no dashboard dependencies (aiohttp_cors, opencensus, ...).
        "ray_head_include_dashboard": False,
        # The model folder on the node: r1deploy_model_root/r1deploy_model_name (roles/r1deploy).
        "r1deploy_model_name": model["name"],
        "r1deploy_model_root": model["root"],
        "r1deploy_model": model["planner_config"],
        "vllm_server_tensor_parallel_size": spec["tp"],
        "vllm_server_pipeline_parallel_size": spec["pp"],
        "vllm_server_max_model_len": 2048,
        "vllm_server_gpu_memory_utilization": 0.3,
        "r1deploy_vllm_port": spec["port"],
        # flashinfer is not in the venv: vLLM's default top-k/top-p sampler would import it.
        "vllm_server_environment": {"VLLM_USE_FLASHINFER_SAMPLER": "0"},
        "vllm_server_start_timeout": 600,
    }
    # Issue 18: --max-model-len, --gpu-memory-utilization, extra vLLM arguments and environment.
    for key, value in (server or {}).items():
        if key == "vllm_server_environment":
            group_vars[key] = {**group_vars[key], **value}
        elif value not in (None, [], {}):
            group_vars[key] = value
    (inv / "group_vars" / "all" / "proof.yml").write_text(
        f"# Generated by scripts/gpu_proof/make_inventory.py (layout {name}); do not edit.\n"
        + _yaml(group_vars)
    )
    return inv


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nvidia-smi", type=Path, required=True, help="captured --query-gpu CSV (nounits)")
    ap.add_argument("--proc-version", type=Path, help="captured /proc/driver/nvidia/version")
    ap.add_argument("--out", type=Path, default=REPO / ".cache" / "gpu-proof" / "inventories")
    ap.add_argument("--model-name", default="r1deploy-tiny")
    ap.add_argument("--model-root", default="/srv/models", help="folder of the model on the GPU host")
    ap.add_argument(
        "--planner-config",
        type=Path,
        default=REPO / ".cache" / "gpu-proof" / "model" / "config.json",
        help="the model's config.json on this machine (what the planner reads)",
    )
    ap.add_argument("--max-model-len", type=int, help="vllm_server_max_model_len (default 2048)")
    ap.add_argument("--gpu-memory-utilization", type=float, help="vllm_server_gpu_memory_utilization (0.3)")
    ap.add_argument("--vllm-arg", action="append", default=[], help="append to vllm_server_extra_args")
    ap.add_argument("--vllm-env", action="append", default=[], help="KEY=VALUE for vllm_server_environment")
    ap.add_argument("layouts", nargs="*", help=f"default: all of {', '.join(LAYOUTS)}")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.layouts) - set(LAYOUTS))
    if unknown:
        ap.error(f"unknown layout(s) {', '.join(unknown)}; known: {', '.join(LAYOUTS)}")
    smi = args.nvidia_smi.read_text().splitlines()
    proc = args.proc_version.read_text() if args.proc_version else None
    model = {
        "name": args.model_name,
        "root": args.model_root,
        "planner_config": str(args.planner_config.resolve()),
    }
    server: dict[str, Any] = {
        "vllm_server_max_model_len": args.max_model_len,
        "vllm_server_gpu_memory_utilization": args.gpu_memory_utilization,
        "vllm_server_extra_args": args.vllm_arg,
        "vllm_server_environment": dict(kv.split("=", 1) for kv in args.vllm_env),
    }
    for name in args.layouts or list(LAYOUTS):
        print(write_layout(name, args.out, smi, proc, model, server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
