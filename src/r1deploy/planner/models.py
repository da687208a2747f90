"""Model shapes: the DeepSeek-R1 family registry and a reader for any HF ``config.json``.

Every number in :data:`MODELS` is copied from the model's published ``config.json`` (Hugging Face
``deepseek-ai/<name>``; see docs/planner.md and shared research section 4.3/4.4). Nothing is fitted:
parameter counts and bytes are computed from these shapes by :mod:`r1deploy.planner.memory`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class ModelError(ValueError):
    """An unknown model name or an unreadable/unsupported config.json."""


@dataclass(frozen=True)
class Quantization:
    """What ``quantization_config`` says about the checkpoint's linear layers."""

    method: str  # fp8 | awq | gptq | compressed-tensors | bitsandbytes | ...
    bits: int  # bits per quantized weight
    group_size: int = 0  # AWQ/GPTQ group size (0 = per channel)
    block: tuple[int, int] | None = None  # FP8 block-wise scales (DeepSeek: 128 x 128)

    @property
    def is_fp8(self) -> bool:
        return self.method == "fp8" or (self.method == "compressed-tensors" and self.bits == 8)


@dataclass(frozen=True)
class ModelSpec:
    """What the rules need from a decoder-only model's config.json."""

    name: str
    architecture: str  # architectures[0]
    model_type: str
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    torch_dtype: str  # bfloat16 | float16 | float32
    max_position_embeddings: int
    qkv_bias: bool = False  # Qwen2: q/k/v projections have biases
    o_bias: bool = False  # Llama attention_bias=true also gives o_proj a bias
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3: per-head RMSNorm on q and k
    quantization: Quantization | None = None
    rope_scaling: dict[str, Any] | None = None
    # DeepSeek-V2/V3 (MLA attention, MoE MLP); zero for dense models.
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    n_routed_experts: int = 0
    n_shared_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    hf_id: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    source: str = "registry"  # registry | path to the config.json it was read from

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    def is_moe_layer(self, index: int) -> bool:
        """DeepSeek: layers ``>= first_k_dense_replace`` with ``index % moe_layer_freq == 0`` are MoE."""
        return self.is_moe and index >= self.first_k_dense_replace and index % self.moe_layer_freq == 0

    @property
    def derived_max_model_len(self) -> int:
        """The longest context vLLM accepts for this config (``_get_and_verify_max_len``).

        vLLM keeps ``max_position_embeddings`` for llama3/longrope/su/dynamic rope scaling and, for
        YaRN, uses ``original_max_position_embeddings * factor``; other scaling types multiply.
        """
        rs = self.rope_scaling or {}
        rope_type = str(rs.get("rope_type", rs.get("type", "")) or "")
        factor = rs.get("factor")
        if not rope_type or rope_type in ("llama3", "longrope", "su", "dynamic", "default", "mrope"):
            return self.max_position_embeddings
        if not isinstance(factor, int | float):
            return self.max_position_embeddings
        if rope_type == "yarn":
            base = int(rs.get("original_max_position_embeddings", self.max_position_embeddings))
            return int(base * factor)
        return int(self.max_position_embeddings * factor)


_DISTILL_COMMON: dict[str, Any] = {
    "torch_dtype": "bfloat16",
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "head_dim": 128,
}

# Values from each model's config.json on Hugging Face (deepseek-ai/<name>).
MODELS: dict[str, ModelSpec] = {
    spec.name.lower(): spec
    for spec in (
        ModelSpec(
            name="DeepSeek-R1-Distill-Qwen-1.5B",
            hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
            architecture="Qwen2ForCausalLM",
            model_type="qwen2",
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            hidden_size=1536,
            intermediate_size=8960,
            vocab_size=151936,
            qkv_bias=True,
            rope_scaling=None,
            aliases=("r1-distill-qwen-1.5b", "qwen-1.5b"),
            **_DISTILL_COMMON,
        ),
        ModelSpec(
            name="DeepSeek-R1-Distill-Qwen-7B",
            hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            architecture="Qwen2ForCausalLM",
            model_type="qwen2",
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            hidden_size=3584,
            intermediate_size=18944,
            vocab_size=152064,
            qkv_bias=True,
            aliases=("r1-distill-qwen-7b", "qwen-7b"),
            **_DISTILL_COMMON,
        ),
        ModelSpec(
            name="DeepSeek-R1-Distill-Qwen-14B",
            hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
            architecture="Qwen2ForCausalLM",
            model_type="qwen2",
            num_hidden_layers=48,
            num_attention_heads=40,
            num_key_value_heads=8,
            hidden_size=5120,
            intermediate_size=13824,
            vocab_size=152064,
            qkv_bias=True,
            aliases=("r1-distill-qwen-14b", "qwen-14b"),
            **_DISTILL_COMMON,
        ),
        ModelSpec(
            name="DeepSeek-R1-Distill-Qwen-32B",
            hf_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
            architecture="Qwen2ForCausalLM",
            model_type="qwen2",
            num_hidden_layers=64,
            num_attention_heads=40,
            num_key_value_heads=8,
            hidden_size=5120,
            intermediate_size=27648,
            vocab_size=152064,
            qkv_bias=True,
            aliases=("r1-distill-qwen-32b", "qwen-32b"),
            **_DISTILL_COMMON,
        ),
        ModelSpec(
            name="DeepSeek-R1-Distill-Llama-8B",
            hf_id="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            architecture="LlamaForCausalLM",
            model_type="llama",
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            hidden_size=4096,
            intermediate_size=14336,
            vocab_size=128256,
            rope_scaling={
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            aliases=("r1-distill-llama-8b", "llama-8b"),
            **_DISTILL_COMMON,
        ),
        ModelSpec(
            name="DeepSeek-R1-Distill-Llama-70B",
            hf_id="deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
            architecture="LlamaForCausalLM",
            model_type="llama",
            num_hidden_layers=80,
            num_attention_heads=64,
            num_key_value_heads=8,
            hidden_size=8192,
            intermediate_size=28672,
            vocab_size=128256,
            rope_scaling={
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
            aliases=("r1-distill-llama-70b", "llama-70b"),
            **_DISTILL_COMMON,
        ),
        # deepseek-ai/DeepSeek-R1 config.json: DeepseekV3ForCausalLM, MLA + 256-expert MoE, FP8
        # block-quantized (e4m3, 128x128 scales). num_nextn_predict_layers (the MTP layer) is not
        # loaded by vLLM for plain serving, so it is not counted here.
        ModelSpec(
            name="DeepSeek-R1",
            hf_id="deepseek-ai/DeepSeek-R1",
            architecture="DeepseekV3ForCausalLM",
            model_type="deepseek_v3",
            num_hidden_layers=61,
            num_attention_heads=128,
            num_key_value_heads=128,
            head_dim=192,  # qk_nope_head_dim + qk_rope_head_dim
            hidden_size=7168,
            intermediate_size=18432,
            vocab_size=129280,
            tie_word_embeddings=False,
            torch_dtype="bfloat16",
            max_position_embeddings=163840,
            rope_scaling={
                "beta_fast": 32,
                "beta_slow": 1,
                "factor": 40,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
                "original_max_position_embeddings": 4096,
                "type": "yarn",
            },
            quantization=Quantization(method="fp8", bits=8, block=(128, 128)),
            kv_lora_rank=512,
            q_lora_rank=1536,
            qk_nope_head_dim=128,
            qk_rope_head_dim=64,
            v_head_dim=128,
            n_routed_experts=256,
            n_shared_experts=1,
            num_experts_per_tok=8,
            moe_intermediate_size=2048,
            first_k_dense_replace=3,
            moe_layer_freq=1,
            aliases=("r1", "deepseek-r1-671b", "r1-671b"),
        ),
    )
}

_DTYPE_NAMES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


def known_model_names() -> list[str]:
    return [spec.name for spec in MODELS.values()]


def _lookup_name(name: str) -> ModelSpec | None:
    key = name.strip().lower()
    if key.startswith("deepseek-ai/"):
        key = key.split("/", 1)[1]
    if key in MODELS:
        return MODELS[key]
    for spec in MODELS.values():
        if key in spec.aliases:
            return spec
    return None


def _quantization(cfg: dict[str, Any]) -> Quantization | None:
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        block = q.get("weight_block_size")
        return Quantization(
            method="fp8",
            bits=8,
            block=(int(block[0]), int(block[1])) if isinstance(block, list) and len(block) == 2 else None,
        )
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
        bits = int(q.get("bits", q.get("w_bit", 4)))
        group = int(q.get("group_size", q.get("q_group_size", 128)) or 0)
        return Quantization(method=method.replace("_marlin", ""), bits=bits, group_size=max(group, 0))
    if method == "bitsandbytes":
        bits = 4 if q.get("load_in_4bit") else 8
        return Quantization(method="bitsandbytes", bits=bits, group_size=64 if bits == 4 else 0)
    if method == "compressed-tensors":
        bits = 16
        groups = q.get("config_groups") or {}
        for group in groups.values() if isinstance(groups, dict) else []:
            weights = group.get("weights") or {}
            if isinstance(weights, dict) and weights.get("num_bits"):
                bits = int(weights["num_bits"])
                break
        return Quantization(method="compressed-tensors", bits=bits, group_size=0)
    if method:
        bits = int(q.get("bits", 16) or 16)
        return Quantization(method=method, bits=bits, group_size=int(q.get("group_size", 0) or 0))
    return None


def _required_int(cfg: dict[str, Any], key: str, source: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"{source}: config.json has no positive integer {key!r} (got {value!r})")
    return value


def from_config(cfg: dict[str, Any], *, name: str = "", source: str = "config.json") -> ModelSpec:
    """Build a :class:`ModelSpec` from a Hugging Face ``config.json`` dictionary."""
    if not isinstance(cfg, dict):
        raise ModelError(f"{source}: config.json is not a JSON object")
    # Multimodal wrappers keep the decoder under text_config.
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
        merged = dict(cfg["text_config"])
        merged.setdefault("architectures", cfg.get("architectures"))
        merged.setdefault("quantization_config", cfg.get("quantization_config"))
        merged.setdefault("torch_dtype", cfg.get("torch_dtype"))
        cfg = merged
    archs = cfg.get("architectures") or ["unknown"]
    model_type = str(cfg.get("model_type", "")).lower()
    layers = _required_int(cfg, "num_hidden_layers", source)
    heads = _required_int(cfg, "num_attention_heads", source)
    hidden = _required_int(cfg, "hidden_size", source)
    vocab = _required_int(cfg, "vocab_size", source)
    kv_heads = cfg.get("num_key_value_heads") or heads
    inter = cfg.get("intermediate_size") or 4 * hidden
    dtype_raw = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32").replace("torch.", "").lower()
    dtype = _DTYPE_NAMES.get(dtype_raw)
    if dtype is None:
        raise ModelError(f"{source}: torch_dtype {dtype_raw!r} is not one of bfloat16, float16, float32")
    is_mla = bool(cfg.get("kv_lora_rank"))
    if is_mla:
        head_dim = int(cfg.get("qk_nope_head_dim", 128)) + int(cfg.get("qk_rope_head_dim", 64))
    else:
        head_dim = int(cfg.get("head_dim") or hidden // heads)
    attention_bias = bool(cfg.get("attention_bias", False))
    qkv_bias = model_type == "qwen2" or attention_bias
    quant = _quantization(cfg)
    moe_freq = int(cfg.get("moe_layer_freq", 1) or 1)
    return ModelSpec(
        name=name or str(cfg.get("_name_or_path") or archs[0]),
        architecture=str(archs[0]),
        model_type=model_type,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=int(kv_heads),
        head_dim=head_dim,
        hidden_size=hidden,
        intermediate_size=int(inter),
        vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        torch_dtype=dtype,
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 2048),
        qkv_bias=qkv_bias,
        o_bias=attention_bias and model_type != "qwen2",
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        qk_norm=model_type in ("qwen3", "qwen3_moe"),
        quantization=quant,
        rope_scaling=cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else None,
        kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
        q_lora_rank=int(cfg.get("q_lora_rank") or 0),
        qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0) if is_mla else 0,
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0) if is_mla else 0,
        v_head_dim=int(cfg.get("v_head_dim") or 0) if is_mla else 0,
        n_routed_experts=int(cfg.get("n_routed_experts") or cfg.get("num_experts") or 0),
        n_shared_experts=int(cfg.get("n_shared_experts") or 0),
        num_experts_per_tok=int(cfg.get("num_experts_per_tok") or 0),
        moe_intermediate_size=int(cfg.get("moe_intermediate_size") or 0),
        first_k_dense_replace=int(cfg.get("first_k_dense_replace") or 0),
        moe_layer_freq=moe_freq,
        source=source,
    )


def load_model(name_or_path: str) -> ModelSpec:
    """A registry name (case-insensitive, ``deepseek-ai/`` prefix allowed) or a path on this machine
    to a ``config.json`` or to a model folder that holds one."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ModelError(f"no model given; known models: {', '.join(known_model_names())}")
    spec = _lookup_name(name_or_path)
    if spec is not None:
        return spec
    path = Path(name_or_path).expanduser()
    looks_like_path = "/" in name_or_path or name_or_path.endswith(".json") or path.exists()
    if not looks_like_path:
        raise ModelError(
            f"unknown model {name_or_path!r}; known models: {', '.join(known_model_names())} "
            "(or give a path to a config.json or a model folder)"
        )
    cfg_path = path / "config.json" if path.is_dir() else path
    if not cfg_path.is_file():
        raise ModelError(
            f"{cfg_path}: no such file (a model path must be a config.json or a folder with one)"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{cfg_path}: cannot read config.json: {exc}") from exc
    display = path.name if path.is_dir() else path.parent.name or str(path)
    return replace(from_config(cfg, name=display, source=str(cfg_path)), source=str(cfg_path))


def normalise_dtype(value: str | None) -> str | None:
    """``auto``/None -> None; the dtype names vLLM accepts -> bfloat16 | float16 | float32."""
    if value is None:
        return None
    key = str(value).strip().lower()
    if key in ("", "auto"):
        return None
    if key not in _DTYPE_NAMES:
        raise ValueError(f"dtype {value!r} is not one of auto, float16, half, bfloat16, float32")
    return _DTYPE_NAMES[key]
