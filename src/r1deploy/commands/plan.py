"""``r1deploy plan``: check a model/GPU/cluster layout and print the vLLM arguments (r1deploy.planner)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from r1deploy.planner import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MAX_NUM_SEQS,
    PlanRequest,
    known_gpu_names,
    known_model_names,
    make_plan,
    match_smi_name,
)

EXIT_OK = 0
EXIT_INVALID = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _utilization(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be in (0, 1], e.g. 0.90")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "plan",
        help="check a model/GPU/cluster layout and print the vLLM arguments",
        description=(
            "Validate and size a vLLM deployment: dtype for the GPU's compute capability, TP x PP layout, "
            "weights and KV cache per GPU, how many max-model-len sequences fit, and the exact vLLM flags "
            "the serving role uses. Exit 0 when the plan is valid, 2 when it is not (every reason listed) "
            "or the arguments are wrong."
        ),
        epilog=f"Models: {', '.join(known_model_names())}. GPUs: {', '.join(known_gpu_names())}.",
    )
    p.add_argument(
        "--model", required=True, help="registry name (case-insensitive) or path to config.json/folder"
    )
    p.add_argument("--gpu", help="GPU registry name (case-insensitive); omit with --device cpu")
    p.add_argument(
        "--device", choices=("gpu", "cpu"), default="gpu", help="gpu (default) or cpu (vLLM CPU build)"
    )
    p.add_argument("--nodes", type=_positive_int, default=1, help="GPU nodes (default 1)")
    p.add_argument("--gpus-per-node", type=_positive_int, default=None, help="GPUs per node")
    p.add_argument(
        "--tp", type=_positive_int, help="tensor parallel size (default: largest valid <= GPUs per node)"
    )
    p.add_argument("--pp", type=_positive_int, help="pipeline parallel size (default: number of nodes)")
    p.add_argument("--replicas", type=_positive_int, default=1, help="independent instances (default 1)")
    p.add_argument(
        "--dtype",
        choices=("auto", "float16", "half", "bfloat16", "float32"),
        default="auto",
        help="auto picks float16 below compute capability 8.0, else the checkpoint's dtype",
    )
    p.add_argument(
        "--max-model-len", type=_positive_int, help=f"context length (default {DEFAULT_MAX_MODEL_LEN})"
    )
    p.add_argument(
        "--gpu-memory-utilization",
        type=_utilization,
        help=f"fraction of GPU memory vLLM may use (default {DEFAULT_GPU_MEMORY_UTILIZATION})",
    )
    p.add_argument(
        "--max-num-seqs", type=_positive_int, help=f"concurrent sequences (default {DEFAULT_MAX_NUM_SEQS})"
    )
    p.add_argument("--compute-capability", help="override the registry's compute capability, e.g. 7.0")
    p.add_argument("--gpu-memory-mib", type=_positive_int, help="override the registry's GPU memory (MiB)")
    p.add_argument(
        "--kv-cache-memory-bytes", help="fixed KV cache size per GPU/CPU worker, e.g. 256M (vLLM flag)"
    )
    p.add_argument(
        "--enable-custom-all-reduce",
        dest="disable_custom_all_reduce",
        action="store_false",
        help="let vLLM use its custom all-reduce where the GPU supports it (compute capability >= 8.0; "
        "vllm_server_disable_custom_all_reduce: false); Volta always runs without it",
    )
    p.add_argument(
        "--gpu-facts",
        metavar="FILE",
        help="take GPU, compute capability, memory and GPUs per node from a fact file "
        "(python -m r1deploy.gpufacts output or /etc/ansible/facts.d/r1deploy_gpus.fact)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run, _parser=p)


def _apply_facts(args: argparse.Namespace) -> None:
    try:
        data = json.loads(Path(args.gpu_facts).read_text())
    except (OSError, ValueError) as exc:
        args._parser.error(f"--gpu-facts {args.gpu_facts}: {exc}")
    fact = data.get("r1deploy_gpus", data) if isinstance(data, dict) else {}
    devices = fact.get("devices") or []
    if not devices:
        args._parser.error(
            f"--gpu-facts {args.gpu_facts}: no GPU in the fact (source {fact.get('source')!r})"
        )
    first = devices[0]
    known = match_smi_name(str(first.get("name", "")))
    args.gpu = args.gpu or (known.name if known else None)
    args.compute_capability = args.compute_capability or first.get("compute_capability") or None
    mems = [int(d["memory_mib"]) for d in devices if d.get("memory_mib")]
    args.gpu_memory_mib = args.gpu_memory_mib or (min(mems) if mems else None)
    args.gpus_per_node = args.gpus_per_node or len(devices)


def run(args: argparse.Namespace) -> int:
    if args.gpu_facts:
        _apply_facts(args)
    if args.device == "gpu" and args.gpus_per_node is None:
        args._parser.error("--gpus-per-node is required for a GPU plan")
    req = PlanRequest(
        model=args.model,
        gpu=args.gpu,
        device=args.device,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node or 1,
        tp=args.tp,
        pp=args.pp,
        replicas=args.replicas,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_num_seqs=args.max_num_seqs,
        compute_capability=args.compute_capability,
        gpu_memory_mib=args.gpu_memory_mib,
        kv_cache_memory_bytes=args.kv_cache_memory_bytes,
        disable_custom_all_reduce=args.disable_custom_all_reduce,
    )
    plan = make_plan(req)
    if args.json:
        json.dump(plan, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(plan))
    return EXIT_OK if plan["ok"] else EXIT_INVALID


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value}{unit}"


def render(plan: dict[str, Any]) -> str:
    """The human table."""
    lines: list[str] = []
    model = plan.get("model") or {}
    gpu = plan.get("gpu") or {}
    status = "VALID" if plan["ok"] else "INVALID"
    lines.append(f"r1deploy plan: {status}")
    rows: list[tuple[str, str]] = []
    if model:
        q = f", {model['quantization']}" if model.get("quantization") else ""
        rows.append(
            ("model", f"{model['name']} ({model['architecture']}, {model['parameters_b']} B params{q})")
        )
    if gpu:
        rows.append(
            (
                "gpu",
                f"{gpu['nvidia_smi_name']} (compute capability {gpu['compute_capability']}, "
                f"{gpu['architecture']}, {gpu['memory_mib']} MiB)",
            )
        )
    else:
        rows.append(("device", plan.get("device") or "-"))
    rows += [
        ("dtype", _fmt(plan.get("dtype"))),
        (
            "layout",
            f"TP {_fmt(plan.get('tensor_parallel_size'))} x PP {_fmt(plan.get('pipeline_parallel_size'))} x "
            f"replicas {_fmt(plan.get('replicas'))} = {_fmt(plan.get('gpus_used'))} of "
            f"{_fmt(plan.get('gpus_total'))} GPUs",
        ),
        ("executor", _fmt(plan.get("distributed_executor_backend"))),
        ("weights per GPU", _fmt(plan.get("weights_gib_per_gpu"), " GiB")),
    ]
    if plan.get("allowance_gib_per_gpu"):
        a = plan["allowance_gib_per_gpu"]
        rows.append(
            (
                "allowance per GPU",
                f"{round(sum(a.values()), 3)} GiB (non-torch {a['non_torch']}, CUDA graphs "
                f"{a['cuda_graphs']}, "
                f"activations {a['activation_peak']})",
            )
        )
        rows.append(
            ("usable per GPU", f"{_fmt(plan.get('usable_gib_per_gpu'), ' GiB')} (memory x utilization)")
        )
    rows.append(("KV cache per GPU", _fmt(plan.get("kv_cache_gib_per_gpu"), " GiB")))
    if plan.get("kv_cache_tokens") is not None:
        rows.append(
            (
                "KV cache tokens",
                f"{plan['kv_cache_tokens']} ({plan['kv_bytes_per_token_per_gpu']} B/token/GPU)",
            )
        )
    rows.append(
        (
            "full-length sequences",
            f"{_fmt(plan.get('max_full_length_sequences'))} of {_fmt(plan.get('max_model_len'))} tokens "
            f"(max_num_seqs {_fmt(plan.get('max_num_seqs'))})",
        )
    )
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    for stage in plan.get("stages") or []:
        if len(plan["stages"]) > 1:
            lines.append(
                f"  {'stage ' + str(stage['stage']):{width}}  layers {stage['first_layer']}-"
                f"{stage['first_layer'] + stage['layers'] - 1}, weights {stage['weights_gib_per_gpu']} GiB, "
                f"KV {_fmt(stage['kv_cache_gib_per_gpu'], ' GiB')}"
            )
    if plan.get("vllm_args"):
        lines.append("vLLM arguments:")
        lines.append("  " + " ".join(plan["vllm_args"]))
    alts = plan.get("alternatives") or []
    if len(alts) > 1:
        lines.append("Layouts considered:")
        for a in alts:
            fit = "fits" if a["fits"] else "does not fit"
            lines.append(
                f"  TP {a['tensor_parallel_size']} x PP {a['pipeline_parallel_size']} x {a['replicas']} "
                "replica(s): "
                f"{fit}, {a['max_full_length_sequences_total']} full-length sequences in total - {a['note']}"
            )
    if plan.get("recommendation"):
        lines.append("Recommendation:")
        lines.append("  " + plan["recommendation"])
    if plan.get("warnings"):
        lines.append("Warnings:")
        lines += [f"  - {w}" for w in plan["warnings"]]
    if plan.get("errors"):
        lines.append("Errors:")
        lines += [f"  - {e}" for e in plan["errors"]]
    return "\n".join(lines) + "\n"
