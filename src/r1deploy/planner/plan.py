"""The serving plan: dtype, TP x PP layout, memory fit, and the vLLM arguments the serving role uses.

:func:`make_plan` is the one entry point; the CLI (``r1deploy plan``), the Ansible filter
``r1deploy_plan`` and preflight all call it. Every rule names its source in a comment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from r1deploy.planner import memory as mem
from r1deploy.planner.findings import Finding
from r1deploy.planner.gpus import (
    AMPERE_MIN_CC,
    BF16_MIN_CC,
    BITSANDBYTES_MIN_CC,
    CC,
    FLASH_ATTENTION_MIN_CC,
    FP8_NATIVE_MIN_CC,
    GPTQ_MIN_CC,
    MARLIN_MIN_CC,
    MIN_CC,
    MLA_FAST_MIN_CC,
    GpuError,
    GpuSpec,
    architecture_for_cc,
    load_gpu,
    parse_cc,
)
from r1deploy.planner.models import ModelError, ModelSpec, load_model, normalise_dtype

# Defaults of the reference launch (shared/reference/mission.md) and of the vllm_server role.
DEFAULT_MAX_MODEL_LEN = 32768
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
DEFAULT_MAX_NUM_SEQS = 128
# The reference launch passes --disable-custom-all-reduce on every GPU; so does vllm_server by default.
DEFAULT_DISABLE_CUSTOM_ALL_REDUCE = True
# gpu, cpu (vLLM's CPU build); a request may also say auto (see resolve_device).
DEVICES = ("gpu", "cpu")

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
    "disable_custom_all_reduce": "--enable-custom-all-reduce",
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
    "disable_custom_all_reduce": "vllm_server_disable_custom_all_reduce",
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
    # The user's wish for GPUs of compute capability 8.0+ (below it custom all-reduce is always off).
    disable_custom_all_reduce: bool | None = None
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
    cc: CC | None,
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
    if device == "cpu" or cc is None or cc >= BF16_MIN_CC:
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


def _quant_findings(model: ModelSpec, cc: CC, gpu_name: str) -> list[Finding]:
    """Which checkpoints the card cannot run (minimum compute capabilities from each vLLM quantization
    config's get_min_capability and shared research section 1.4)."""
    out: list[Finding] = []
    q = model.quantization
    cc_text = f"{cc[0]}.{cc[1]}"
    if q is not None:
        if q.is_fp8 and cc < MARLIN_MIN_CC:
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
        elif q.is_fp8 and cc < FP8_NATIVE_MIN_CC:
            out.append(
                Finding(
                    "warning",
                    "quant-fp8-marlin",
                    f"{gpu_name} (compute capability {cc_text}) has no FP8 tensor cores: vLLM runs this FP8 "
                    "checkpoint weight-only through FP8 Marlin (slower than native FP8 on 8.9+)",
                )
            )
        if q.method == "awq" and cc < MARLIN_MIN_CC:
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
        if q.method == "gptq" and cc < MARLIN_MIN_CC:
            out.append(
                Finding(
                    "warning",
                    "quant-gptq-volta",
                    f"GPTQ on compute capability {cc_text}: vLLM uses its plain GPTQ kernels "
                    "(GPTQ Marlin needs 7.5)",
                )
            )
        if (q.method == "gptq" and cc < GPTQ_MIN_CC) or (
            q.method == "bitsandbytes" and cc < BITSANDBYTES_MIN_CC
        ):
            out.append(Finding("error", "quant-unsupported", f"{q.method} needs a newer GPU than {gpu_name}"))
    if model.is_mla:
        if cc < AMPERE_MIN_CC:
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
        elif cc < MLA_FAST_MIN_CC:
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
    """Validate the request, choose the layout, size the memory; return the plan dictionary.

    Each step is a function below, in the order it runs; the plan stops after the inputs and after the
    layout when a step found an error (later steps would only repeat it)."""
    lab = {**CLI_LABELS, **req.labels}
    findings: list[Finding] = []
    out = _empty_plan(req.device)
    device = resolve_device(req.device, req.gpus_per_node)
    if device is None:
        findings.append(
            Finding("error", "device", f"device must be gpu, cpu or auto, got {req.device!r}", lab["device"])
        )
        return _finish(out, findings)
    out["device"] = device
    inputs = _read_inputs(req, device, lab, findings)
    hw = _identify_hardware(req, device, inputs.gpu_memory_mib, lab, findings)
    if hw.cc is not None:
        out["gpu"] = _gpu_summary(hw)
        findings += _compute_capability_findings(hw, lab)
    model = inputs.model
    if model is None or inputs.nodes is None or inputs.gpus_per_node is None or _has_error(findings):
        return _finish(out, findings)

    out["model"] = _model_summary(model)
    findings += _architecture_findings(model, lab)
    dtype, dtype_findings = _resolve_dtype(inputs.dtype, model, device, hw.cc, lab["dtype"], hw.name)
    findings += dtype_findings
    out["dtype"] = dtype
    findings += _gpu_checkpoint_findings(model, dtype, device, hw)
    findings += _max_model_len_findings(model, inputs.max_model_len, lab)

    layout, layout_findings = choose_layout(
        model, device, inputs.nodes, inputs.gpus_per_node, inputs.tp, inputs.pp, inputs.replicas, lab
    )
    findings += layout_findings
    out.update(_layout_summary(layout, device))
    findings += _layout_findings(model, layout, device, lab)
    if _has_error(findings):
        return _finish(out, findings)

    evaluate = _evaluator(model, dtype, device, hw, inputs)
    ev = evaluate(layout.tp, layout.pp)
    out.update(_memory_summary(ev, inputs, device, hw))
    findings += _memory_findings(model, dtype, ev, layout, inputs, device, hw, lab)
    findings += _volta_seqs_findings(device, hw.cc, inputs.max_num_seqs, lab)

    backend = executor_backend(device, layout.tp, layout.pp)
    out["distributed_executor_backend"] = backend
    disabled = custom_all_reduce_disabled(device, hw.cc, inputs.disable_custom_all_reduce)
    out["vllm_args"] = vllm_args(
        device,
        dtype,
        layout,
        backend,
        max_model_len=inputs.max_model_len,
        gpu_memory_utilization=inputs.gpu_memory_utilization,
        max_num_seqs=inputs.max_num_seqs,
        kv_cache_bytes=inputs.kv_cache_bytes,
        attention=attention_backend(device, hw.cc),
        disable_custom_all_reduce=disabled,
    )

    if device == "gpu" and ev.memory_rule and inputs.kv_cache_bytes is None:
        out["alternatives"], out["recommendation"] = _alternatives(
            model, layout.nodes, layout.gpus_per_node, layout.tp, layout.pp, ev, evaluate
        )
    return _finish(out, findings)


# ---- the plan dictionary -----------------------------------------------------------------------------


def _empty_plan(device: str) -> dict[str, Any]:
    """The keys every plan has, in the order the JSON output shows them."""
    return {
        "ok": False,
        "errors": [],
        "warnings": [],
        "findings": [],
        "model": None,
        "gpu": None,
        "device": device,
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


def _has_error(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def _finish(out: dict[str, Any], findings: list[Finding]) -> dict[str, Any]:
    """Findings into the plan; an invalid plan has no vLLM arguments (nothing may start from it)."""
    out["findings"] = [f.as_dict() for f in findings]
    out["errors"] = [f.text for f in findings if f.severity == "error"]
    out["warnings"] = [f.text for f in findings if f.severity != "error"]
    out["ok"] = not out["errors"]
    if not out["ok"]:
        out["vllm_args"] = []
    return out


# ---- step 1: the inputs ------------------------------------------------------------------------------


def resolve_device(device: str | None, gpus_per_node: Any) -> str | None:
    """gpu or cpu as asked; ``auto`` picks cpu where the hosts report no GPU (GPUs per node 0, what the
    ``r1deploy_gpus`` fact says on a CPU-only host) and gpu otherwise. None for anything else."""
    name = str(device or "gpu").lower()
    if name == "auto":
        no_gpu = isinstance(gpus_per_node, int) and not isinstance(gpus_per_node, bool) and gpus_per_node == 0
        return "cpu" if no_gpu else "gpu"
    return name if name in DEVICES else None


@dataclass(frozen=True)
class _Inputs:
    """The request after the type and range checks (None where a check failed; defaults filled in)."""

    model: ModelSpec | None
    nodes: int | None
    gpus_per_node: int | None
    tp: int | None
    pp: int | None
    replicas: int
    max_model_len: int
    max_num_seqs: int
    gpu_memory_mib: int | None
    gpu_memory_utilization: float
    dtype: str | None  # normalised; None means auto
    kv_cache_bytes: int | None
    disable_custom_all_reduce: bool


def _read_inputs(req: PlanRequest, device: str, lab: dict[str, str], findings: list[Finding]) -> _Inputs:
    try:
        model: ModelSpec | None = load_model(req.model)
    except ModelError as exc:
        findings.append(Finding("error", "model-unknown", str(exc), lab["model"]))
        model = None
    nodes = _check_int(findings, req.nodes, "nodes", lab["nodes"])
    # A CPU-only host reports 0 GPUs: on device cpu the value only counts worker slots (>= 1).
    gpn_min = 0 if device == "cpu" else 1
    gpn = _check_int(findings, req.gpus_per_node, "GPUs per node", lab["gpus_per_node"], gpn_min)
    tp = _check_int(findings, req.tp, "tensor parallel size", lab["tp"])
    pp = _check_int(findings, req.pp, "pipeline parallel size", lab["pp"])
    replicas = _check_int(findings, req.replicas, "replicas", lab["replicas"]) or 1
    max_len = _check_int(findings, req.max_model_len, "max model length", lab["max_model_len"])
    seqs = _check_int(findings, req.max_num_seqs, "max num seqs", lab["max_num_seqs"])
    gpu_mib = _check_int(findings, req.gpu_memory_mib, "GPU memory (MiB)", lab["gpu_memory_mib"])
    util = read_utilization(req.gpu_memory_utilization, lab["gpu_memory_utilization"], findings)
    try:
        dtype = normalise_dtype(req.dtype)
    except (ValueError, TypeError) as exc:
        findings.append(Finding("error", "dtype", str(exc), lab["dtype"]))
        dtype = None
    kv_bytes = read_kv_cache_bytes(req.kv_cache_memory_bytes, lab["kv_cache_memory_bytes"], findings)
    disable_car = _check_bool(
        findings,
        req.disable_custom_all_reduce,
        "disable custom all-reduce",
        lab["disable_custom_all_reduce"],
        DEFAULT_DISABLE_CUSTOM_ALL_REDUCE,
    )
    return _Inputs(
        model=model,
        nodes=nodes,
        gpus_per_node=max(gpn, 1) if gpn is not None else None,
        tp=tp,
        pp=pp,
        replicas=replicas,
        max_model_len=max_len or DEFAULT_MAX_MODEL_LEN,
        max_num_seqs=seqs or DEFAULT_MAX_NUM_SEQS,
        gpu_memory_mib=gpu_mib,
        gpu_memory_utilization=util,
        dtype=dtype,
        kv_cache_bytes=kv_bytes,
        disable_custom_all_reduce=disable_car,
    )


def read_utilization(value: Any, label: str, findings: list[Finding]) -> float:
    """--gpu-memory-utilization: a number in (0, 1]; the default when absent or wrong (then an error)."""
    if value is None:
        return DEFAULT_GPU_MEMORY_UTILIZATION
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < float(value) <= 1:
        findings.append(
            Finding(
                "error",
                "utilization",
                f"GPU memory utilization must be a number in (0, 1], got {type(value).__name__} {value!r}",
                label,
                "e.g. 0.90",
            )
        )
        return DEFAULT_GPU_MEMORY_UTILIZATION
    return float(value)


def read_kv_cache_bytes(value: Any, label: str, findings: list[Finding]) -> int | None:
    """--kv-cache-memory-bytes: None when absent ("" and 0 too), else bytes (an error when unreadable)."""
    if value in (None, "", 0):
        return None
    try:
        return _parse_bytes(value)
    except ValueError as exc:
        findings.append(Finding("error", "kv-bytes", str(exc), label))
        return None


def _check_bool(findings: list[Finding], value: Any, key: str, label: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        findings.append(
            Finding(
                "error",
                "type-bool",
                f"{key} must be true or false, got {type(value).__name__} {value!r}",
                label,
                "" if label.startswith("-") else f"write {label}: true or false without quotes",
            )
        )
        return default
    return value


# ---- step 2: the GPU ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hardware:
    """What the plan knows of the accelerator: the registry entry, compute capability, name, memory."""

    gpu: GpuSpec | None = None
    cc: CC | None = None
    name: str = "CPU"  # nvidia-smi's name, or a description when only the capability is known
    memory_mib: int | None = None


def _identify_hardware(
    req: PlanRequest, device: str, gpu_mib: int | None, lab: dict[str, str], findings: list[Finding]
) -> _Hardware:
    """The GPU from the registry name, with the compute capability overridable (the hosts' facts)."""
    if device != "gpu":
        if req.gpu not in (None, ""):
            findings.append(
                Finding(
                    "warning",
                    "cpu-ignores-gpu",
                    f"device cpu: the GPU model {req.gpu!r} is ignored",
                    lab["gpu"],
                )
            )
        return _Hardware(memory_mib=gpu_mib)
    gpu: GpuSpec | None = None
    cc: CC | None = None
    name = "CPU"
    if req.gpu not in (None, ""):
        try:
            gpu = load_gpu(str(req.gpu))
            cc = gpu.cc_tuple
            name = gpu.smi_names[0]
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
        findings.append(Finding("error", "gpu-memory-missing", "GPU memory unknown", lab["gpu_memory_mib"]))
    if gpu is None and cc is not None:
        name = f"GPU (compute capability {cc[0]}.{cc[1]})"
    return _Hardware(gpu, cc, name, gpu_mib)


def _gpu_summary(hw: _Hardware) -> dict[str, Any]:
    assert hw.cc is not None
    cc = f"{hw.cc[0]}.{hw.cc[1]}"
    return {
        "name": hw.gpu.name if hw.gpu else None,
        "nvidia_smi_name": hw.name,
        "compute_capability": cc,
        "architecture": architecture_for_cc(cc),
        "memory_mib": hw.memory_mib,
    }


def _compute_capability_findings(hw: _Hardware, lab: dict[str, str]) -> list[Finding]:
    if hw.cc is None or hw.cc >= MIN_CC:
        return []
    return [
        Finding(
            "error",
            "cc-too-old",
            f"vLLM needs compute capability {MIN_CC[0]}.{MIN_CC[1]} or higher; {hw.name} has "
            f"{hw.cc[0]}.{hw.cc[1]}",
            lab["gpu"],
            "use V100 or newer GPUs",
        )
    ]


# ---- step 3: the model on this GPU -------------------------------------------------------------------


def _model_summary(model: ModelSpec) -> dict[str, Any]:
    return {
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


def _architecture_findings(model: ModelSpec, lab: dict[str, str]) -> list[Finding]:
    if model.architecture in _KNOWN_ARCHS:
        return []
    return [
        Finding(
            "warning",
            "arch-unverified",
            f"{model.architecture} is not one of the architectures these rules were written for "
            f"({', '.join(sorted(_KNOWN_ARCHS))}); sizes assume a Llama-style decoder",
            lab["model"],
        )
    ]


def _gpu_checkpoint_findings(model: ModelSpec, dtype: str, device: str, hw: _Hardware) -> list[Finding]:
    """What the GPU cannot run of the checkpoint (quantization, MLA) and the bf16 -> fp16 cast."""
    if device != "gpu" or hw.cc is None:
        return []
    out = _quant_findings(model, hw.cc, hw.name)
    if dtype == "float16" and model.torch_dtype == "bfloat16":
        out.append(
            Finding(
                "warning",
                "fp16-from-bf16",
                f"serving a bfloat16 checkpoint in float16 (compute capability {hw.cc[0]}.{hw.cc[1]}): "
                "values beyond the fp16 range overflow; the deploy's smoke test rejects degenerate "
                "output",
            )
        )
    return out


def _max_model_len_findings(model: ModelSpec, max_len: int, lab: dict[str, str]) -> list[Finding]:
    """vllm/config/model.py _get_and_verify_max_len: no longer than the model's context."""
    derived = model.derived_max_model_len
    if max_len <= derived:
        return []
    return [
        Finding(
            "error",
            "max-model-len",
            f"max model length {max_len} is greater than {model.name}'s maximum context {derived}",
            lab["max_model_len"],
            f"set it to {derived} or less (R1 traces need about 32768)",
        )
    ]


# ---- step 4: the layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """TP x PP x replicas over nodes x GPUs per node."""

    tp: int
    pp: int
    replicas: int
    nodes: int
    gpus_per_node: int

    @property
    def gpus_total(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def gpus_used(self) -> int:
        return self.tp * self.pp * self.replicas


def choose_layout(
    model: ModelSpec,
    device: str,
    nodes: int,
    gpn: int,
    tp_in: int | None,
    pp_in: int | None,
    replicas: int,
    lab: dict[str, str],
) -> tuple[Layout, list[Finding]]:
    """TP and PP as asked, else vLLM's advice: TP = the largest valid size within a node, PP = nodes
    (fewer when replicas share the cluster; never more stages than layers). CPU: 1 x 1 unless asked."""
    findings: list[Finding] = []
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
        return Layout(tp, pp, replicas, nodes, gpn), findings
    valid_in_node = valid_tp_sizes(model, gpn)
    tp = tp_in if tp_in is not None else max(valid_in_node or [1])
    if pp_in is None:
        pp = nodes if tp_in is None and tp <= gpn else max(1, nodes * gpn // (tp * replicas))
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
    return Layout(tp, pp, replicas, nodes, gpn), findings


def _layout_summary(layout: Layout, device: str) -> dict[str, Any]:
    gpu = device == "gpu"
    return {
        "gpus_total": layout.gpus_total if gpu else None,
        "tensor_parallel_size": layout.tp,
        "pipeline_parallel_size": layout.pp,
        "replicas": layout.replicas,
        "gpus_used": layout.gpus_used if gpu else 0,
    }


def _layout_findings(model: ModelSpec, layout: Layout, device: str, lab: dict[str, str]) -> list[Finding]:
    """The layout against the model (heads, layers) and, on GPUs, against the cluster."""
    out = _model_layout_findings(model, layout, device, lab)
    if device == "gpu":
        out += _cluster_layout_findings(model, layout, lab)
    return out


def _model_layout_findings(
    model: ModelSpec, layout: Layout, device: str, lab: dict[str, str]
) -> list[Finding]:
    out: list[Finding] = []
    tp, pp, total = layout.tp, layout.pp, layout.gpus_total
    for problem in _tp_problems(model, tp):
        valid = valid_tp_sizes(model, max(total if device == "gpu" else tp, model.num_attention_heads))
        out.append(
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
        out.append(
            Finding(
                "error",
                "pp-layers",
                f"pipeline parallel size {pp} is larger than the {model.num_hidden_layers} layers of "
                f"{model.name}",
                lab["pp"],
                f"use at most {model.num_hidden_layers}",
            )
        )
    return out


def _cluster_layout_findings(model: ModelSpec, layout: Layout, lab: dict[str, str]) -> list[Finding]:
    """Enough GPUs; TP inside a node (vLLM's advice: TP = GPUs per node, PP = nodes)."""
    out: list[Finding] = []
    tp, pp, gpn, nodes = layout.tp, layout.pp, layout.gpus_per_node, layout.nodes
    used, total = layout.gpus_used, layout.gpus_total
    if used > total:
        out.append(
            Finding(
                "error",
                "gpus-short",
                f"TP {tp} x PP {pp} x replicas {layout.replicas} = {used} GPUs, but the cluster has "
                f"{nodes} node(s) x {gpn} = {total}",
                f"{lab['tp']} / {lab['pp']}",
                "lower TP or PP, or add nodes",
            )
        )
    elif used < total:
        out.append(
            Finding("warning", "gpus-idle", f"{total - used} of {total} GPUs are not used by this layout")
        )
    if tp > gpn:
        out.append(
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
        out.append(
            Finding(
                "strict",
                "tp-straddles",
                f"TP {tp} does not divide the {gpn} GPUs of a node: some TP groups would span two nodes",
                lab["tp"],
                f"use a TP that divides {gpn}",
            )
        )
    return out


# ---- step 5: memory ----------------------------------------------------------------------------------


def _evaluator(
    model: ModelSpec, dtype: str, device: str, hw: _Hardware, inputs: _Inputs
) -> Callable[[int, int], _Eval]:
    """Memory of a TP x PP layout with everything else of this plan fixed (for the alternatives too)."""

    def evaluate(tp: int, pp: int) -> _Eval:
        return _evaluate(
            model,
            tp,
            pp,
            dtype,
            device=device,
            gpu_memory_mib=hw.memory_mib,
            gpu_name=hw.name,
            util=inputs.gpu_memory_utilization,
            max_model_len=inputs.max_model_len,
            max_num_seqs=inputs.max_num_seqs,
            kv_cache_bytes=inputs.kv_cache_bytes,
        )

    return evaluate


def _memory_summary(ev: _Eval, inputs: _Inputs, device: str, hw: _Hardware) -> dict[str, Any]:
    util = inputs.gpu_memory_utilization
    out: dict[str, Any] = {
        "stages": [
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
        ],
        "weights_bytes_per_gpu": ev.weights_max,
        "weights_gib_per_gpu": _gib(ev.weights_max),
        "kv_bytes_per_token_per_gpu": max(s.kv_per_token for s in ev.stages),
        "kv_block_size": ev.block_size,
        "max_model_len": inputs.max_model_len,
        "max_num_seqs": inputs.max_num_seqs,
        "gpu_memory_utilization": util if device == "gpu" else None,
    }
    if ev.allowance:
        worst = max(ev.allowance, key=lambda a: sum(a.values()))
        out["allowance_gib_per_gpu"] = {k: _gib(v) for k, v in worst.items()}
        out["usable_gib_per_gpu"] = _gib(int(hw.memory_mib * mem.MIB * util)) if hw.memory_mib else None
    if ev.memory_rule:
        out["kv_cache_bytes_per_gpu"] = ev.kv_min
        out["kv_cache_gib_per_gpu"] = _gib(max(ev.kv_min, 0))
        out["kv_cache_tokens"] = ev.kv_tokens
        out["max_full_length_sequences"] = ev.full_length_sequences
        out["max_concurrency"] = round(ev.kv_tokens / inputs.max_model_len, 2)
        out["estimated_max_model_len"] = ev.kv_tokens
    return out


def _memory_findings(
    model: ModelSpec,
    dtype: str,
    ev: _Eval,
    layout: Layout,
    inputs: _Inputs,
    device: str,
    hw: _Hardware,
    lab: dict[str, str],
) -> list[Finding]:
    """The weights must fit, one max-model-len sequence must fit, max_num_seqs should fit (vLLM's own
    start-up checks, vllm/v1/core/kv_cache_utils.py)."""
    if not ev.memory_rule:
        return []
    max_len, seqs, util, gpu_mib = (
        inputs.max_model_len,
        inputs.max_num_seqs,
        inputs.gpu_memory_utilization,
        hw.memory_mib,
    )
    if device == "gpu" and inputs.kv_cache_bytes is None and ev.kv_min <= 0:
        stage = min(range(len(ev.stages)), key=lambda i: ev.kv_budget[i])
        s = ev.stages[stage]
        return [
            Finding(
                "error",
                "weights-do-not-fit",
                f"{model.name} in {dtype} needs {_gib(s.weights)} GiB of weights per GPU (stage "
                f"{stage}, TP {layout.tp} x "
                f"PP {layout.pp}) plus {_gib(sum(ev.allowance[stage].values()))} GiB activation/CUDA-graph "
                "allowance, "
                f"but {gpu_mib} MiB x {util:g} = {_gib(int(gpu_mib * mem.MIB * util))} GiB is "  # type: ignore[operator]
                "usable",
                f"{lab['tp']} / {lab['pp']}",
                "use more GPUs (higher TP or PP), a smaller model, or a quantized checkpoint",
            )
        ]
    if ev.full_length_sequences < 1:
        need = ev.blocks_per_seq * ev.block_size * max(s.kv_per_token for s in ev.stages)
        return [
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
        ]
    if ev.full_length_sequences < seqs:
        return [
            Finding(
                "warning",
                "seqs-exceed-kv",
                f"{ev.full_length_sequences} full-length ({max_len}-token) sequences fit in the KV cache "
                f"({ev.kv_tokens} tokens); max_num_seqs {seqs} runs only when sequences are shorter "
                "(vLLM queues or preempts the rest)",
                lab["max_num_seqs"],
            )
        ]
    return []


def _volta_seqs_findings(device: str, cc: CC | None, seqs: int, lab: dict[str, str]) -> list[Finding]:
    if device == "gpu" and cc is not None and cc < AMPERE_MIN_CC and seqs < 2:
        return [
            Finding(
                "warning",
                "volta-seqs",
                "V100 operators report instability with max_num_seqs < 2",
                lab["max_num_seqs"],
            )
        ]
    return []


# ---- step 6: executor and flags ----------------------------------------------------------------------


def executor_backend(device: str, tp: int, pp: int) -> str:
    """vllm/config/parallel.py: one GPU -> "uni"; several GPUs across Ray nodes -> "ray"; the CPU
    platform refuses Ray ("current platform cpu does not support ray"), so CPU plans use "mp"."""
    if device == "cpu":
        return "mp"
    if tp * pp == 1:
        return "uni"
    return "ray"


def custom_all_reduce_disabled(device: str, cc: CC | None, wish: bool) -> bool:
    """``--disable-custom-all-reduce``: never on CPU (vLLM's CPU build has no custom all-reduce);
    always below compute capability 8.0, where custom all-reduce hangs or fails (V100: 1Cat-vLLM #652,
    PR #88; vLLM #8410); elsewhere the user's wish (vllm_server_disable_custom_all_reduce, default true
    like the reference launch)."""
    if device != "gpu":
        return False
    if cc is not None and cc < AMPERE_MIN_CC:
        return True
    return wish


def attention_backend(device: str, cc: CC | None) -> str | None:
    """FlashAttention needs sm80, so below 8.0 the V1 selector's usable backend is TRITON_ATTN (research
    1.3, 1.4); elsewhere vLLM chooses."""
    if device == "gpu" and cc is not None and cc < FLASH_ATTENTION_MIN_CC:
        return "TRITON_ATTN"
    return None


def vllm_args(
    device: str,
    dtype: str,
    layout: Layout,
    backend: str,
    *,
    max_model_len: int,
    gpu_memory_utilization: float,
    max_num_seqs: int,
    kv_cache_bytes: int | None,
    attention: str | None,
    disable_custom_all_reduce: bool,
) -> list[str]:
    """The arguments the vLLM unit gets from the plan, in a fixed order (a change of order would
    restart the unit)."""
    args = [
        "--dtype",
        dtype,
        "--tensor-parallel-size",
        str(layout.tp),
        "--pipeline-parallel-size",
        str(layout.pp),
        "--max-model-len",
        str(max_model_len),
    ]
    if device == "gpu":
        args += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    args += ["--max-num-seqs", str(max_num_seqs), "--distributed-executor-backend", backend]
    if disable_custom_all_reduce:
        args.append("--disable-custom-all-reduce")
    if attention is not None:
        args += ["--attention-backend", attention]
    if kv_cache_bytes is not None:
        args += ["--kv-cache-memory-bytes", str(kv_cache_bytes)]
    return args


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
