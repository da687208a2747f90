"""The serving plan: dtype, TP x PP layout, memory fit, and the vLLM arguments the serving role uses.

:func:`make_plan` is the one entry point; the CLI (``r1deploy plan``), the Ansible filter
``r1deploy_plan`` and preflight all call it. Every rule names its source in a comment.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from r1deploy.planner import memory as mem
from r1deploy.planner.findings import Finding
from r1deploy.planner.gpus import GpuError, GpuSpec, architecture_for_cc, load_gpu, parse_cc
from r1deploy.planner.models import ModelError, ModelSpec, load_model, normalise_dtype

# Defaults of the reference launch (shared/reference/mission.md) and of the vllm_server role.
DEFAULT_MAX_MODEL_LEN = 32768
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
DEFAULT_MAX_NUM_SEQS = 128

# How each input is named to the user. The CLI names flags; Ansible names inventory variables.
CLI_LABELS: dict[str, str] = {
    "model": "--model",
    "gpu": "--gpu",
    "device": "--device",
    "nodes": "--nodes",
    "gpus_per_node": "--gpus-per-node",
    "tp": "--tp",
    "pp": "--pp",
    "replicas": "--replicas",
    "dtype": "--dtype",
    "max_model_len": "--max-model-len",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_num_seqs": "--max-num-seqs",
    "compute_capability": "--compute-capability",
    "gpu_memory_mib": "--gpu-memory-mib",
    "kv_cache_memory_bytes": "--kv-cache-memory-bytes",
}
ANSIBLE_LABELS: dict[str, str] = {
    "model": "r1deploy_model",
    "gpu": "r1deploy_gpu_model",
    "device": "r1deploy_gpu_model (null means device cpu)",
    "nodes": "groups.gpu_nodes (host count)",
    "gpus_per_node": "r1deploy_gpus_per_node",
    "tp": "vllm_server_tensor_parallel_size",
    "pp": "vllm_server_pipeline_parallel_size",
    "replicas": "replicas",
    "dtype": "vllm_server_dtype",
    "max_model_len": "vllm_server_max_model_len",
    "gpu_memory_utilization": "vllm_server_gpu_memory_utilization",
    "max_num_seqs": "vllm_server_max_num_seqs",
    "compute_capability": "r1deploy_gpus.devices[].compute_capability",
    "gpu_memory_mib": "r1deploy_gpus.devices[].memory_mib",
    "kv_cache_memory_bytes": "vllm_server_kv_cache_memory_bytes",
}


@dataclass
class PlanRequest:
    model: str
    gpu: str | None = None
    device: str = "gpu"
    nodes: int = 1
    gpus_per_node: int = 1
    tp: int | None = None
    pp: int | None = None
    replicas: int = 1
    dtype: str | None = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    compute_capability: str | None = None
    gpu_memory_mib: int | None = None
    kv_cache_memory_bytes: int | str | None = None
    labels: dict[str, str] = field(default_factory=lambda: dict(CLI_LABELS))

    @classmethod
    def from_dict(cls, data: dict[str, Any], labels: dict[str, str] | None = None) -> PlanRequest:
        known = {f for f in cls.__dataclass_fields__ if f != "labels"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown plan input(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: v for k, v in data.items() if v is not None}
        return cls(**values, labels=dict(labels or CLI_LABELS))


@dataclass
class _Eval:
    """Memory of one layout (per GPU of each stage)."""

    tp: int
    pp: int
    stages: list[mem.StageBytes]
    allowance: list[dict[str, int]]
    kv_budget: list[int]  # bytes per GPU per stage (None-free; may be negative)
    block_size: int
    blocks: int  # KV blocks the engine gets: min over stages (vllm/v1/core/kv_cache_utils.py)
    blocks_per_seq: int
    memory_rule: bool

    @property
    def weights_max(self) -> int:
        return max(s.weights for s in self.stages)

    @property
    def kv_tokens(self) -> int:
        return self.blocks * self.block_size

    @property
    def full_length_sequences(self) -> int:
        return self.blocks // self.blocks_per_seq if self.blocks_per_seq else 0

    @property
    def kv_min(self) -> int:
        return min(self.kv_budget)


def _parse_bytes(value: int | str) -> int:
    """256M, 4GiB, 1073741824 -> bytes (vLLM's --kv-cache-memory-bytes accepts k/m/g suffixes)."""
    if isinstance(value, bool):
        raise ValueError("must be a byte count")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", str(value).lower())
    if not m:
        raise ValueError(f"{value!r} is not a byte count like 268435456, 256M or 4G")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def valid_tp_sizes(model: ModelSpec, limit: int) -> list[int]:
    return [t for t in range(1, limit + 1) if not _tp_problems(model, t)]


def _tp_problems(model: ModelSpec, tp: int) -> list[str]:
    """vLLM ModelConfig.verify_with_parallel_config: heads % TP == 0. QKVParallelLinear: KV heads % TP
    == 0 when TP < KV heads, else TP % KV heads == 0 (each KV head replicated TP / KV heads times)."""
    out = []
    if model.num_attention_heads % tp:
        out.append(f"the {model.num_attention_heads} attention heads are not divisible by TP {tp}")
    if not model.is_mla:
        kv = model.num_key_value_heads
        if tp < kv and kv % tp:
            out.append(f"the {kv} KV heads are not divisible by TP {tp}")
        if tp > kv and tp % kv:
            out.append(f"TP {tp} is not a multiple of the {kv} KV heads (vLLM replicates KV heads evenly)")
    return out


def _resolve_dtype(
    requested: str | None,
    model: ModelSpec,
    device: str,
    cc: tuple[int, int] | None,
    label: str,
    gpu_name: str,
) -> tuple[str, list[Finding]]:
    """vLLM's dtype rules. auto: vllm/config/model.py ``_resolve_auto_dtype`` takes the checkpoint's
    torch_dtype when the platform supports it, a float32 checkpoint is cast to the platform's preferred
    dtype, and an unsupported dtype falls back to it. CUDA ``supported_dtypes`` (vllm/platforms/cuda.py):
    cc >= 8.0 [bfloat16, float16, float32]; cc 6.x/7.x [float16, float32]. The CPU platform supports
    all three (vllm/platforms/cpu.py). An explicit bfloat16 below cc 8.0 stops vLLM with "Bfloat16 is
    only supported on GPUs with compute capability of at least 8.0" (check_if_supports_dtype)."""
    findings: list[Finding] = []
    if device == "cpu" or cc is None or cc >= (8, 0):
        supported = ["bfloat16", "float16", "float32"]
    else:
        supported = ["float16", "float32"]
    if requested is None:
        ckpt = model.torch_dtype
        if ckpt == "float32":
            return supported[0], findings
        if ckpt in supported:
            return ckpt, findings
        return supported[0], findings
    if requested not in supported:
        cc_text = f"{cc[0]}.{cc[1]}" if cc else "?"
        findings.append(
            Finding(
                "error",
                "dtype-bf16-unsupported",
                f"bfloat16 is only supported on GPUs with compute capability of at least 8.0; "
                f"{gpu_name} has compute capability {cc_text}",
                label,
                "use --dtype half (float16), or auto, which picks float16 on this GPU"
                + ("" if label.startswith("-") else f" ({label}: half)"),
            )
        )
    return requested, findings


def _quant_findings(model: ModelSpec, cc: tuple[int, int], gpu_name: str) -> list[Finding]:
    """Which checkpoints the card cannot run (minimum compute capabilities from each vLLM quantization
    config's get_min_capability and shared research section 1.4)."""
    out: list[Finding] = []
    q = model.quantization
    cc_text = f"{cc[0]}.{cc[1]}"
    if q is not None:
        if q.is_fp8 and cc < (7, 5):
            out.append(
                Finding(
                    "error",
                    "quant-fp8",
                    f"{model.name} is an FP8 checkpoint: FP8 compute needs compute capability 8.9 and the "
                    "FP8 "
                    f"Marlin weight-only path 7.5; {gpu_name} has {cc_text}",
                    "model quantization",
                    "use an fp16/bf16 or GPTQ checkpoint, or FP8-capable GPUs (L40S, H100, H200)",
                )
            )
        elif q.is_fp8 and cc < (8, 9):
            out.append(
                Finding(
                    "warning",
                    "quant-fp8-marlin",
                    f"{gpu_name} (compute capability {cc_text}) has no FP8 tensor cores: vLLM runs this FP8 "
                    "checkpoint weight-only through FP8 Marlin (slower than native FP8 on 8.9+)",
                )
            )
        if q.method == "awq" and cc < (7, 5):
            out.append(
                Finding(
                    "error",
                    "quant-awq",
                    f"{model.name} is an AWQ checkpoint: vLLM's AWQ and Marlin kernels need compute "
                    "capability 7.5; "
                    f"{gpu_name} has {cc_text}",
                    "model quantization",
                    "use a GPTQ (int4/int8) or an fp16 checkpoint on Volta",
                )
            )
        if q.method == "gptq" and cc < (7, 5):
            out.append(
                Finding(
                    "warning",
                    "quant-gptq-volta",
                    f"GPTQ on compute capability {cc_text}: vLLM uses its plain GPTQ kernels "
                    "(GPTQ Marlin needs 7.5)",
                )
            )
        if (q.method == "gptq" and cc < (6, 0)) or (q.method == "bitsandbytes" and cc < (7, 0)):
            out.append(Finding("error", "quant-unsupported", f"{q.method} needs a newer GPU than {gpu_name}"))
    if model.is_mla:
        if cc < (8, 0):
            out.append(
                Finding(
                    "error",
                    "full-r1-volta" if model.model_type == "deepseek_v3" else "mla-volta",
                    f"{model.name} ({model.architecture}: MLA attention, {model.n_routed_experts}-expert "
                    "MoE) cannot "
                    f"be served on {gpu_name} (compute capability {cc_text}): no bf16/FP8, so weights would "
                    "be "
                    "upcast to fp16 (about 1.34 TB for the 671B model), the MLA fast paths "
                    "(FlashMLA/FlashInfer) "
                    "need SM90+, and DeepSeek-V3 overflows in fp16",
                    "r1deploy_model / --model",
                    "serve a DeepSeek-R1-Distill model (Qwen-32B or Llama-70B) on V100s",
                )
            )
        elif cc < (9, 0):
            out.append(
                Finding(
                    "warning",
                    "mla-slow-path",
                    f"MLA fast paths (FlashMLA) need SM90+; on compute capability {cc_text} vLLM uses "
                    "Triton MLA",
                )
            )
    return out


_KNOWN_ARCHS = {
    "Qwen2ForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen3ForCausalLM",
    "DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM",
}


def _evaluate(
    model: ModelSpec,
    tp: int,
    pp: int,
    dtype: str,
    *,
    device: str,
    gpu_memory_mib: int | None,
    gpu_name: str,
    util: float,
    max_model_len: int,
    max_num_seqs: int,
    kv_cache_bytes: int | None,
) -> _Eval:
    b = mem.DTYPE_BYTES[dtype]
    stages = mem.stage_bytes(model, tp, pp, b, b)
    block = mem.BLOCK_SIZE_CPU if device == "cpu" else mem.BLOCK_SIZE_GPU
    allowance: list[dict[str, int]] = []
    budgets: list[int] = []
    memory_rule = True
    if device == "gpu" and gpu_memory_mib:
        tokens = mem.default_max_num_batched_tokens(gpu_memory_mib, gpu_name)
        total = gpu_memory_mib * mem.MIB
        for s in stages:
            parts = {
                "non_torch": mem.NON_TORCH_BYTES,
                "cuda_graphs": mem.CUDA_GRAPH_BYTES,
                "activation_peak": mem.activation_bytes(
                    model, tp, b, tokens, max_num_seqs, s.stage == pp - 1
                ),
            }
            allowance.append(parts)
            # vllm/v1/worker/gpu_worker.py: KV = total x utilization - (weights + activation + non-torch)
            requested = int(total * util)
            budgets.append(
                kv_cache_bytes if kv_cache_bytes is not None else requested - s.weights - sum(parts.values())
            )
    elif kv_cache_bytes is not None:
        budgets = [kv_cache_bytes for _ in stages]
    else:
        memory_rule = False
        budgets = [0 for _ in stages]
    # vllm/v1/core/kv_cache_utils.py: blocks = available // (page bytes x layers); the engine takes the
    # minimum over all workers. One max_model_len sequence needs cdiv(max_model_len, block_size) blocks.
    blocks = min(
        (max(budget, 0) // (s.kv_per_token * block) if s.kv_per_token else 0)
        for s, budget in zip(stages, budgets, strict=True)
    )
    return _Eval(
        tp, pp, stages, allowance, budgets, block, blocks, math.ceil(max_model_len / block), memory_rule
    )


def _gib(n: int | float) -> float:
    return round(n / mem.GIB, 3)


def _check_int(findings: list[Finding], value: Any, key: str, label: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        findings.append(
            Finding(
                "error",
                "type-int",
                f"{key} must be an integer >= {minimum}, got {type(value).__name__} {value!r}",
                label,
                f"write a plain number without quotes, e.g. {label}: {minimum}"
                if not label.startswith("-")
                else "",
            )
        )
        return None
    if value < minimum:
        findings.append(Finding("error", "range", f"{key} must be >= {minimum}, got {value}", label))
        return None
    return value


def make_plan(req: PlanRequest) -> dict[str, Any]:
    """Validate the request, choose the layout, size the memory; return the plan dictionary."""
    lab = {**CLI_LABELS, **req.labels}
    findings: list[Finding] = []
    out: dict[str, Any] = {
        "ok": False,
        "errors": [],
        "warnings": [],
        "findings": [],
        "model": None,
        "gpu": None,
        "device": req.device,
        "dtype": None,
        "tensor_parallel_size": None,
        "pipeline_parallel_size": None,
        "replicas": None,
        "gpus_total": None,
        "gpus_used": None,
        "weights_gib_per_gpu": None,
        "kv_cache_gib_per_gpu": None,
        "max_full_length_sequences": None,
        "vllm_args": [],
        "distributed_executor_backend": None,
    }

    def finish() -> dict[str, Any]:
        out["findings"] = [f.as_dict() for f in findings]
        out["errors"] = [f.text for f in findings if f.severity == "error"]
        out["warnings"] = [f.text for f in findings if f.severity != "error"]
        out["ok"] = not out["errors"]
        if not out["ok"]:
            out["vllm_args"] = []
        return out

    # ---- inputs -----------------------------------------------------------------------------------
    device = str(req.device or "gpu").lower()
    if device not in ("gpu", "cpu"):
        findings.append(
            Finding("error", "device", f"device must be gpu or cpu, got {req.device!r}", lab["device"])
        )
        return finish()
    out["device"] = device
    try:
        model = load_model(req.model)
    except ModelError as exc:
        findings.append(Finding("error", "model-unknown", str(exc), lab["model"]))
        model = None
    nodes = _check_int(findings, req.nodes, "nodes", lab["nodes"])
    # A CPU-only host reports 0 GPUs: on device cpu the value only counts worker slots (>= 1).
    gpn_min = 0 if device == "cpu" else 1
    gpn = _check_int(findings, req.gpus_per_node, "GPUs per node", lab["gpus_per_node"], gpn_min)
    gpn = max(gpn, 1) if gpn is not None else None
    tp_in = _check_int(findings, req.tp, "tensor parallel size", lab["tp"])
    pp_in = _check_int(findings, req.pp, "pipeline parallel size", lab["pp"])
    replicas = _check_int(findings, req.replicas, "replicas", lab["replicas"]) or 1
    max_len = _check_int(findings, req.max_model_len, "max model length", lab["max_model_len"])
    seqs = _check_int(findings, req.max_num_seqs, "max num seqs", lab["max_num_seqs"])
    gpu_mib = _check_int(findings, req.gpu_memory_mib, "GPU memory (MiB)", lab["gpu_memory_mib"])
    max_len = max_len or DEFAULT_MAX_MODEL_LEN
    seqs = seqs or DEFAULT_MAX_NUM_SEQS
    util = req.gpu_memory_utilization
    if util is None:
        util = DEFAULT_GPU_MEMORY_UTILIZATION
    elif isinstance(util, bool) or not isinstance(util, int | float) or not 0 < float(util) <= 1:
        findings.append(
            Finding(
                "error",
                "utilization",
                f"GPU memory utilization must be a number in (0, 1], got {type(util).__name__} {util!r}",
                lab["gpu_memory_utilization"],
                "e.g. 0.90",
            )
        )
        util = DEFAULT_GPU_MEMORY_UTILIZATION
    util = float(util)
    try:
        dtype_req = normalise_dtype(req.dtype)
    except (ValueError, TypeError) as exc:
        findings.append(Finding("error", "dtype", str(exc), lab["dtype"]))
        dtype_req = None
    kv_bytes: int | None = None
    if req.kv_cache_memory_bytes not in (None, "", 0):
        try:
            kv_bytes = _parse_bytes(req.kv_cache_memory_bytes)  # type: ignore[arg-type]
        except ValueError as exc:
            findings.append(Finding("error", "kv-bytes", str(exc), lab["kv_cache_memory_bytes"]))

    gpu: GpuSpec | None = None
    cc: tuple[int, int] | None = None
    gpu_name = "CPU"
    if device == "gpu":
        if req.gpu not in (None, ""):
            try:
                gpu = load_gpu(str(req.gpu))
                cc = gpu.cc_tuple
                gpu_name = gpu.smi_names[0]
                gpu_mib = gpu_mib or gpu.memory_mib
            except GpuError as exc:
                findings.append(Finding("error", "gpu-unknown", str(exc), lab["gpu"]))
        if req.compute_capability not in (None, ""):
            try:
                cc = parse_cc(str(req.compute_capability))
            except ValueError as exc:
                findings.append(Finding("error", "cc", str(exc), lab["compute_capability"]))
        if req.gpu in (None, "") and cc is None:
            findings.append(
                Finding(
                    "error",
                    "gpu-missing",
                    "no GPU model given for a GPU plan",
                    lab["gpu"],
                    "name the GPU (e.g. v100-sxm2-32gb), or use device cpu for a CPU-only site",
                )
            )
        if gpu is None and cc is not None and not gpu_mib:
            findings.append(
                Finding("error", "gpu-memory-missing", "GPU memory unknown", lab["gpu_memory_mib"])
            )
        if gpu is None and cc is not None:
            gpu_name = f"GPU (compute capability {cc[0]}.{cc[1]})"
    elif req.gpu not in (None, ""):
        findings.append(
            Finding(
                "warning", "cpu-ignores-gpu", f"device cpu: the GPU model {req.gpu!r} is ignored", lab["gpu"]
            )
        )
    if cc is not None:
        out["gpu"] = {
            "name": gpu.name if gpu else None,
            "nvidia_smi_name": gpu_name,
            "compute_capability": f"{cc[0]}.{cc[1]}",
            "architecture": architecture_for_cc(f"{cc[0]}.{cc[1]}"),
            "memory_mib": gpu_mib,
        }
        if cc < (7, 0):
            findings.append(
                Finding(
                    "error",
                    "cc-too-old",
                    f"vLLM needs compute capability 7.0 or higher; {gpu_name} has {cc[0]}.{cc[1]}",
                    lab["gpu"],
                    "use V100 or newer GPUs",
                )
            )
    if model is None or nodes is None or gpn is None or any(f.severity == "error" for f in findings):
        return finish()

    out["model"] = {
        "name": model.name,
        "architecture": model.architecture,
        "source": model.source,
        "parameters": mem.parameter_count(model),
        "parameters_b": round(mem.parameter_count(model) / 1e9, 2),
        "checkpoint_gib": _gib(mem.checkpoint_bytes(model)),
        "torch_dtype": model.torch_dtype,
        "quantization": model.quantization.method if model.quantization else None,
        "num_hidden_layers": model.num_hidden_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_key_value_heads,
        "head_dim": model.head_dim,
        "max_position_embeddings": model.derived_max_model_len,
    }
    if model.architecture not in _KNOWN_ARCHS:
        findings.append(
            Finding(
                "warning",
                "arch-unverified",
                f"{model.architecture} is not one of the architectures these rules were written for "
                f"({', '.join(sorted(_KNOWN_ARCHS))}); sizes assume a Llama-style decoder",
                lab["model"],
            )
        )

    # ---- dtype ------------------------------------------------------------------------------------
    dtype, fs = _resolve_dtype(dtype_req, model, device, cc, lab["dtype"], gpu_name)
    findings += fs
    out["dtype"] = dtype
    if device == "gpu" and cc is not None:
        findings += _quant_findings(model, cc, gpu_name)
        if dtype == "float16" and model.torch_dtype == "bfloat16":
            findings.append(
                Finding(
                    "warning",
                    "fp16-from-bf16",
                    f"serving a bfloat16 checkpoint in float16 (compute capability {cc[0]}.{cc[1]}): "
                    "values beyond the fp16 range overflow; the deploy's smoke test rejects degenerate "
                    "output",
                )
            )

    # ---- max model len ----------------------------------------------------------------------------
    derived = model.derived_max_model_len
    if max_len > derived:
        # vllm/config/model.py _get_and_verify_max_len
        findings.append(
            Finding(
                "error",
                "max-model-len",
                f"max model length {max_len} is greater than {model.name}'s maximum context {derived}",
                lab["max_model_len"],
                f"set it to {derived} or less (R1 traces need about 32768)",
            )
        )

    # ---- layout -----------------------------------------------------------------------------------
    total = nodes * gpn
    out["gpus_total"] = total if device == "gpu" else None
    if device == "cpu":
        tp = tp_in or 1
        pp = pp_in or 1
        if nodes > 1:
            findings.append(
                Finding(
                    "warning",
                    "cpu-single-node",
                    "vLLM's CPU platform refuses the Ray executor: the API server runs on the head node "
                    "with the "
                    "mp executor, the other nodes only join the Ray cluster",
                )
            )
        if pp > 1:
            findings.append(
                Finding(
                    "warning", "cpu-pp-eager", "CPU pipeline parallelism works only without --enforce-eager"
                )
            )
    else:
        valid_in_node = valid_tp_sizes(model, gpn)
        tp = tp_in if tp_in is not None else max(valid_in_node or [1])
        if pp_in is None:
            pp = nodes if tp_in is None and tp <= gpn else max(1, total // (tp * replicas))
            pp = min(pp, model.num_hidden_layers)
        else:
            pp = pp_in
        if tp_in is None and tp < gpn:
            findings.append(
                Finding(
                    "warning",
                    "tp-below-node",
                    f"TP {tp} is the largest size ≤ {gpn} that {model.name} allows "
                    f"(valid: {', '.join(map(str, valid_in_node))}); {gpn - tp} GPU(s) per node stay idle",
                    lab["tp"],
                )
            )
    out["tensor_parallel_size"] = tp
    out["pipeline_parallel_size"] = pp
    out["replicas"] = replicas
    used = tp * pp * replicas
    out["gpus_used"] = used if device == "gpu" else 0

    for problem in _tp_problems(model, tp):
        valid = valid_tp_sizes(model, max(total if device == "gpu" else tp, model.num_attention_heads))
        findings.append(
            Finding(
                "error",
                "tp-heads",
                f"{model.name}: {problem}",
                lab["tp"],
                "use one of "
                f"{', '.join(map(str, [t for t in valid if t <= max(total, 1) or device == 'cpu'][:12]))}",
            )
        )
    if pp > model.num_hidden_layers:
        findings.append(
            Finding(
                "error",
                "pp-layers",
                f"pipeline parallel size {pp} is larger than the {model.num_hidden_layers} layers of "
                f"{model.name}",
                lab["pp"],
                f"use at most {model.num_hidden_layers}",
            )
        )
    if device == "gpu":
        if used > total:
            findings.append(
                Finding(
                    "error",
                    "gpus-short",
                    f"TP {tp} x PP {pp} x replicas {replicas} = {used} GPUs, but the cluster has "
                    f"{nodes} node(s) x {gpn} = {total}",
                    f"{lab['tp']} / {lab['pp']}",
                    "lower TP or PP, or add nodes",
                )
            )
        elif used < total:
            findings.append(
                Finding("warning", "gpus-idle", f"{total - used} of {total} GPUs are not used by this layout")
            )
        if tp > gpn:
            findings.append(
                Finding(
                    "strict",
                    "tp-cross-node",
                    f"TP {tp} spans nodes ({gpn} GPUs per node): every layer all-reduces over the network; "
                    "vLLM recommends TP = GPUs per node and PP = nodes",
                    lab["tp"],
                    f"use TP {max(valid_tp_sizes(model, gpn) or [1])} and PP {nodes}, or set "
                    "r1deploy_ignore_preflight_errors: true to force it",
                )
            )
        elif gpn % tp and pp > 1:
            findings.append(
                Finding(
                    "strict",
                    "tp-straddles",
                    f"TP {tp} does not divide the {gpn} GPUs of a node: some TP groups would span two nodes",
                    lab["tp"],
                    f"use a TP that divides {gpn}",
                )
            )
    if any(f.severity == "error" for f in findings):
        return finish()

    # ---- memory -----------------------------------------------------------------------------------
    def evaluate(t: int, p: int) -> _Eval:
        return _evaluate(
            model,
            t,
            p,
            dtype,
            device=device,
            gpu_memory_mib=gpu_mib,
            gpu_name=gpu_name,
            util=util,
            max_model_len=max_len,
            max_num_seqs=seqs,
            kv_cache_bytes=kv_bytes,
        )

    ev = evaluate(tp, pp)
    out["stages"] = [
        {
            "stage": s.stage,
            "layers": s.layers,
            "first_layer": s.first_layer,
            "weights_gib_per_gpu": _gib(s.weights),
            "kv_bytes_per_token_per_gpu": s.kv_per_token,
            "allowance_gib": _gib(sum(a.values())) if a else None,
            "kv_cache_gib_per_gpu": _gib(max(k, 0)) if ev.memory_rule else None,
        }
        for s, a, k in zip(ev.stages, ev.allowance or [{}] * len(ev.stages), ev.kv_budget, strict=True)
    ]
    out["weights_bytes_per_gpu"] = ev.weights_max
    out["weights_gib_per_gpu"] = _gib(ev.weights_max)
    out["kv_bytes_per_token_per_gpu"] = max(s.kv_per_token for s in ev.stages)
    out["kv_block_size"] = ev.block_size
    out["max_model_len"] = max_len
    out["max_num_seqs"] = seqs
    out["gpu_memory_utilization"] = util if device == "gpu" else None
    if ev.allowance:
        worst = max(ev.allowance, key=lambda a: sum(a.values()))
        out["allowance_gib_per_gpu"] = {k: _gib(v) for k, v in worst.items()}
        out["usable_gib_per_gpu"] = _gib(int(gpu_mib * mem.MIB * util)) if gpu_mib else None
    if ev.memory_rule:
        out["kv_cache_bytes_per_gpu"] = ev.kv_min
        out["kv_cache_gib_per_gpu"] = _gib(max(ev.kv_min, 0))
        out["kv_cache_tokens"] = ev.kv_tokens
        out["max_full_length_sequences"] = ev.full_length_sequences
        out["max_concurrency"] = round(ev.kv_tokens / max_len, 2)
        out["estimated_max_model_len"] = ev.kv_tokens
        if device == "gpu" and kv_bytes is None and ev.kv_min <= 0:
            stage = min(range(len(ev.stages)), key=lambda i: ev.kv_budget[i])
            s = ev.stages[stage]
            findings.append(
                Finding(
                    "error",
                    "weights-do-not-fit",
                    f"{model.name} in {dtype} needs {_gib(s.weights)} GiB of weights per GPU (stage "
                    f"{stage}, TP {tp} x "
                    f"PP {pp}) plus {_gib(sum(ev.allowance[stage].values()))} GiB activation/CUDA-graph "
                    "allowance, "
                    f"but {gpu_mib} MiB x {util:g} = {_gib(int(gpu_mib * mem.MIB * util))} GiB is "
                    "usable",  # type: ignore[operator]
                    f"{lab['tp']} / {lab['pp']}",
                    "use more GPUs (higher TP or PP), a smaller model, or a quantized checkpoint",
                )
            )
        elif ev.full_length_sequences < 1:
            need = ev.blocks_per_seq * ev.block_size * max(s.kv_per_token for s in ev.stages)
            findings.append(
                Finding(
                    "error",
                    "context-does-not-fit",
                    f"one {max_len}-token sequence needs {_gib(need)} GiB of KV cache per GPU but "
                    f"{_gib(max(ev.kv_min, 0))} GiB is left (vLLM refuses to start: 'To serve at least one "
                    "request "
                    f"with the models's max seq len'); about {ev.kv_tokens} tokens fit",
                    lab["max_model_len"],
                    f"lower it to {max(ev.kv_tokens // 1024 * 1024, 0) or ev.kv_tokens}, raise "
                    f"{lab['gpu_memory_utilization'] if device == 'gpu' else lab['kv_cache_memory_bytes']}, "
                    "or use more GPUs",
                )
            )
        elif ev.full_length_sequences < seqs:
            findings.append(
                Finding(
                    "warning",
                    "seqs-exceed-kv",
                    f"{ev.full_length_sequences} full-length ({max_len}-token) sequences fit in the KV cache "
                    f"({ev.kv_tokens} tokens); max_num_seqs {seqs} runs only when sequences are shorter "
                    "(vLLM queues or preempts the rest)",
                    lab["max_num_seqs"],
                )
            )
    if device == "gpu" and cc is not None and cc < (8, 0) and seqs < 2:
        findings.append(
            Finding(
                "warning",
                "volta-seqs",
                "V100 operators report instability with max_num_seqs < 2",
                lab["max_num_seqs"],
            )
        )

    # ---- executor and flags -----------------------------------------------------------------------
    # Executor (vllm/config/parallel.py): one GPU -> "uni"; several GPUs across Ray nodes -> "ray"; the CPU
    # platform refuses Ray ("current platform cpu does not support ray"), so CPU plans use "mp".
    if device == "cpu":
        backend = "mp"
    elif tp * pp == 1:
        backend = "uni"
    else:
        backend = "ray"
    out["distributed_executor_backend"] = backend
    args = [
        "--dtype",
        dtype,
        "--tensor-parallel-size",
        str(tp),
        "--pipeline-parallel-size",
        str(pp),
        "--max-model-len",
        str(max_len),
    ]
    if device == "gpu":
        args += ["--gpu-memory-utilization", f"{util:g}"]
    args += ["--max-num-seqs", str(seqs), "--distributed-executor-backend", backend]
    if device == "gpu" and cc is not None and cc[0] == 7:
        # Volta/Turing: custom all-reduce hangs or fails on V100 (1Cat-vLLM #652, PR #88; vLLM #8410);
        # FlashAttention needs sm80, so the V1 selector's usable backend is TRITON_ATTN (research 1.3, 1.4).
        args += ["--disable-custom-all-reduce", "--attention-backend", "TRITON_ATTN"]
    if kv_bytes is not None:
        args += ["--kv-cache-memory-bytes", str(kv_bytes)]
    out["vllm_args"] = args

    # ---- alternatives -----------------------------------------------------------------------------
    if device == "gpu" and ev.memory_rule and kv_bytes is None:
        out["alternatives"], out["recommendation"] = _alternatives(model, nodes, gpn, tp, pp, ev, evaluate)
    return finish()


def _alternatives(
    model: ModelSpec, nodes: int, gpn: int, tp: int, pp: int, chosen: _Eval, evaluate: Any
) -> tuple[list[dict[str, Any]], str]:
    total = nodes * gpn
    alts: list[dict[str, Any]] = []

    def describe(t: int, p: int, r: int, ev: _Eval, why: str) -> dict[str, Any]:
        fits = ev.kv_min > 0 and ev.full_length_sequences >= 1
        return {
            "tensor_parallel_size": t,
            "pipeline_parallel_size": p,
            "replicas": r,
            "gpus_used": t * p * r,
            "fits": fits,
            "weights_gib_per_gpu": _gib(ev.weights_max),
            "kv_cache_gib_per_gpu": _gib(max(ev.kv_min, 0)),
            "max_full_length_sequences_per_instance": ev.full_length_sequences if fits else 0,
            "max_full_length_sequences_total": ev.full_length_sequences * r if fits else 0,
            "note": why,
        }

    alts.append(describe(tp, pp, 1, chosen, "one instance over the whole cluster (what the roles deploy)"))
    node_tp = max(valid_tp_sizes(model, gpn) or [1])
    per_node = evaluate(node_tp, 1)
    if nodes > 1 and (node_tp, 1) != (tp, pp):
        alts.append(describe(node_tp, 1, nodes, per_node, "one instance per node behind nginx"))
    smallest = next(
        (
            t
            for t in valid_tp_sizes(model, gpn)
            if evaluate(t, 1).kv_min > 0 and evaluate(t, 1).full_length_sequences >= 1
        ),
        None,
    )
    if smallest is not None and smallest != node_tp and total // smallest > 1:
        alts.append(
            describe(
                smallest, 1, total // smallest, evaluate(smallest, 1), "smallest TP that fits, replicated"
            )
        )
    replicated = [a for a in alts[1:] if a["fits"]]
    if not replicated:
        text = (
            f"{model.name} does not fit in fewer GPUs than TP {tp} x PP {pp}: one instance over the cluster "
            "is the "
            "only layout"
        )
        return alts, text
    best = max(replicated, key=lambda a: a["replicas"])
    one = alts[0]
    text = (
        f"Throughput: {best['replicas']} replicas of TP {best['tensor_parallel_size']} (no pipeline traffic "
        "between "
        f"nodes on every token, {best['replicas']} independent schedulers) hold "
        f"{best['max_full_length_sequences_total']} full-length sequences in total, "
        f"{best['max_full_length_sequences_per_instance']} each. Context: one TP {tp} x PP {pp} instance "
        "keeps one "
        f"copy of the weights, so it has the most KV cache for long sequences in one engine "
        f"({one['max_full_length_sequences_per_instance']} full-length sequences, "
        f"{one['kv_cache_gib_per_gpu']} GiB KV per GPU). The roles deploy one instance on ray_head, so this "
        "plan uses "
        f"TP {tp} x PP {pp}; replicas need one vllm_server per node behind nginx."
    )
    return alts, text


def plan_from_dict(data: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The filter's entry point: a plain dict in, the plan dict out (never raises for bad values)."""
    try:
        req = PlanRequest.from_dict(dict(data), labels)
    except (TypeError, ValueError) as exc:
        return {
            "ok": False,
            "errors": [f"plan input: {exc}"],
            "warnings": [],
            "findings": [],
            "vllm_args": [],
        }
    return make_plan(req)
