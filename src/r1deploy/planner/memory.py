"""Bytes: parameters, weights per GPU under TP x PP, KV cache per token, the activation allowance.

Each function mirrors how vLLM shards and allocates; the vLLM source it follows is named in a comment.
Units are bytes; GiB = 2**30.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from r1deploy.planner.models import ModelSpec, Quantization

GIB = 1 << 30
MIB = 1 << 20

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}

# vLLM pads the vocabulary to a multiple of 64 before splitting it over TP ranks
# (vllm/model_executor/layers/vocab_parallel_embedding.py: DEFAULT_VOCAB_PADDING_SIZE = 64).
VOCAB_PADDING = 64

# KV cache block size: 16 tokens on CUDA (vllm/config/cache.py default), 128 on the CPU platform
# (vllm/platforms/cpu.py check_and_update_config sets block_size = 128 when unset).
BLOCK_SIZE_GPU = 16
BLOCK_SIZE_CPU = 128

# The activation/CUDA-graph allowance subtracted from GPU memory x gpu_memory_utilization before the
# KV cache (documented in docs/planner.md). vLLM's profile run measures the real numbers at start-up;
# these are deliberately on the safe side of what V100/A100/H100 logs show:
#  - non-torch memory: CUDA context, cuBLAS/cuDNN workspaces, NCCL communicator buffers (vLLM counts
#    them against the budget: vllm/v1/worker/gpu_worker.py determine_available_memory);
#  - CUDA graphs: captured after the KV cache is sized (0.1-1 GiB in vLLM's "Graph capturing finished
#    ... took X GiB" log line), so kept out of the KV budget here;
#  - activation peak: computed below from max_num_batched_tokens, and the sampler's float32 logits.
NON_TORCH_BYTES = 3 * GIB // 4
CUDA_GRAPH_BYTES = GIB // 2


def pad_vocab(vocab: int) -> int:
    return math.ceil(vocab / VOCAB_PADDING) * VOCAB_PADDING


def stage_layers(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage, as vLLM's ``get_pp_indices`` (vllm/distributed/utils.py) splits them:
    equal shares, the remainder added one by one from the second-to-last stage backwards (the last stage
    also runs the final norm and lm_head, the first the embedding)."""
    per = num_layers // pp
    parts = [per] * pp
    remaining = num_layers % pp
    for i in range(2, remaining + 2):
        parts[-i] += 1
    return parts


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """``QKVParallelLinear`` (vllm/model_executor/layers/linear.py): with tp >= total KV heads each rank
    holds one KV head, replicated tp / kv_heads times; otherwise kv_heads / tp heads per rank."""
    if tp >= model.num_key_value_heads:
        return 1
    return model.num_key_value_heads // tp


def linear_bytes(in_f: int, out_f: int, quant: Quantization | None, dtype_bytes: int) -> int:
    """Bytes of one (sharded) linear weight ``[out_f, in_f]`` with its quantization scales."""
    n = in_f * out_f
    if quant is None or quant.bits >= 16:
        return n * dtype_bytes
    if quant.is_fp8:
        # fp8 weight + float32 scales: one per 128x128 block (DeepSeek) or one per output channel.
        if quant.block:
            bo, bi = quant.block
            return n + math.ceil(out_f / bo) * math.ceil(in_f / bi) * 4
        return n + out_f * 4
    packed = n * quant.bits // 8
    if quant.method in ("awq", "gptq"):
        # qweight (packed) + fp16 scales and packed zero points per group (+ GPTQ's int32 g_idx).
        groups = math.ceil(in_f / quant.group_size) if quant.group_size > 0 else 1
        extra = groups * out_f * 2 + groups * out_f * quant.bits // 8
        if quant.method == "gptq":
            extra += in_f * 4
        return packed + extra
    if quant.method == "bitsandbytes":
        return packed + (n // 64) * 4 if quant.bits == 4 else packed + out_f * 4
    return packed + out_f * 2


@dataclass(frozen=True)
class LayerBytes:
    attention: int
    mlp: int
    norms: int

    @property
    def total(self) -> int:
        return self.attention + self.mlp + self.norms


def layer_bytes(
    model: ModelSpec, index: int, tp: int, dtype_bytes: int, *, materialized: bool = True
) -> LayerBytes:
    """Bytes of decoder layer ``index`` on one TP rank.

    Column-parallel weights (q/k/v, gate/up) split their output, row-parallel ones (o, down) their input
    over TP ranks; norms and row-parallel biases are replicated (vllm/model_executor/layers/linear.py).
    """
    q = model.quantization
    h = model.hidden_size
    b = dtype_bytes
    if model.is_mla:
        heads = model.num_attention_heads // tp
        qk = model.qk_nope_head_dim + model.qk_rope_head_dim
        attn = 0
        if model.q_lora_rank:
            # fused_qkv_a_proj is replicated (disable_tp); q_b_proj is column parallel.
            attn += linear_bytes(h, model.q_lora_rank, q, b) + model.q_lora_rank * b
            attn += linear_bytes(model.q_lora_rank, heads * qk, q, b)
        else:
            attn += linear_bytes(h, heads * qk, q, b)
        attn += linear_bytes(h, model.kv_lora_rank + model.qk_rope_head_dim, q, b) + model.kv_lora_rank * b
        attn += linear_bytes(model.kv_lora_rank, heads * (model.qk_nope_head_dim + model.v_head_dim), q, b)
        attn += linear_bytes(heads * model.v_head_dim, h, q, b)
        if materialized:
            # vLLM's MLA backends keep W_UK_T and W_UV (kv_b_proj split and dequantized) in the model dtype
            # (vllm/attention/backends/mla/common.py process_weights_after_loading).
            attn += model.kv_lora_rank * heads * (model.qk_nope_head_dim + model.v_head_dim) * b
    else:
        q_out = model.num_attention_heads * model.head_dim // tp
        kv_out = kv_heads_per_rank(model, tp) * model.head_dim
        attn = linear_bytes(h, q_out + 2 * kv_out, q, b)
        attn += linear_bytes(q_out, h, q, b)
        if model.qkv_bias:
            attn += (q_out + 2 * kv_out) * b
        if model.o_bias:
            attn += h * b
        if model.qk_norm:
            attn += 2 * model.head_dim * b
    if model.is_moe_layer(index):
        inter = model.moe_intermediate_size // tp
        # Router: ReplicatedLinear, never quantized; DeepSeek-V3 adds a float32 e_score_correction_bias.
        mlp = h * model.n_routed_experts * b + (
            model.n_routed_experts * 4 if model.model_type == "deepseek_v3" else 0
        )
        # FusedMoE without expert parallelism: every rank holds every expert, intermediate split by TP.
        per_expert = linear_bytes(h, 2 * inter, q, b) + linear_bytes(inter, h, q, b)
        mlp += model.n_routed_experts * per_expert
        if model.n_shared_experts:
            shared = model.n_shared_experts * model.moe_intermediate_size // tp
            mlp += linear_bytes(h, 2 * shared, q, b) + linear_bytes(shared, h, q, b)
    else:
        inter = model.intermediate_size // tp
        mlp = linear_bytes(h, 2 * inter, q, b) + linear_bytes(inter, h, q, b)
        if model.mlp_bias:
            mlp += 2 * inter * b + h * b
    return LayerBytes(attention=attn, mlp=mlp, norms=2 * h * b)


def embedding_bytes(model: ModelSpec, tp: int, dtype_bytes: int) -> int:
    """``VocabParallelEmbedding`` / ``ParallelLMHead``: padded vocab rows split over TP ranks."""
    return math.ceil(pad_vocab(model.vocab_size) / tp) * model.hidden_size * dtype_bytes


@dataclass(frozen=True)
class StageBytes:
    stage: int
    first_layer: int
    layers: int
    weights: int  # bytes on each GPU of this stage
    kv_per_token: int  # KV cache bytes per token on each GPU of this stage


def stage_bytes(
    model: ModelSpec, tp: int, pp: int, dtype_bytes: int, kv_dtype_bytes: int
) -> list[StageBytes]:
    """Weights and KV bytes per token on one GPU of each pipeline stage.

    The first stage holds the embedding, the last the final norm and lm_head; with tied embeddings and
    PP > 1 the last stage holds its own copy of the embedding as lm_head (vllm/model_executor/models/
    qwen2.py, llama.py: ``embed_tokens`` on the first rank or, when tied, on the last rank).
    """
    stages = []
    start = 0
    emb = embedding_bytes(model, tp, dtype_bytes)
    for s, n in enumerate(stage_layers(model.num_hidden_layers, pp)):
        w = sum(layer_bytes(model, i, tp, dtype_bytes).total for i in range(start, start + n))
        if s == 0:
            w += emb
        if s == pp - 1:
            w += model.hidden_size * dtype_bytes  # final norm
            if not model.tie_word_embeddings or pp > 1:
                w += emb  # lm_head (own weights, or the tied embedding's copy on the last rank)
        stages.append(StageBytes(s, start, n, w, n * kv_bytes_per_token_per_layer(model, tp, kv_dtype_bytes)))
        start += n
    return stages


def kv_bytes_per_token_per_layer(model: ModelSpec, tp: int, kv_dtype_bytes: int) -> int:
    """K and V for one token in one layer on one TP rank.

    Dense attention: 2 x KV heads per rank x head_dim x bytes (replicated heads when TP > KV heads).
    MLA: one latent (kv_lora_rank + qk_rope_head_dim) per token, replicated on every TP rank
    (vllm/v1/kv_cache_interface.py MLAAttentionSpec)."""
    if model.is_mla:
        return (model.kv_lora_rank + model.qk_rope_head_dim) * kv_dtype_bytes
    return 2 * kv_heads_per_rank(model, tp) * model.head_dim * kv_dtype_bytes


def parameter_count(model: ModelSpec) -> int:
    """Logical parameters (quantization ignored, tied embeddings counted once)."""
    total = sum(
        layer_bytes(_unquantized(model), i, 1, 1, materialized=False).total
        for i in range(model.num_hidden_layers)
    )
    total += model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)
    return total + model.hidden_size


def checkpoint_bytes(model: ModelSpec) -> int:
    """Size of the weights on disk in the checkpoint's own dtype and quantization (the disk check)."""
    b = DTYPE_BYTES[model.torch_dtype]
    total = sum(layer_bytes(model, i, 1, b, materialized=False).total for i in range(model.num_hidden_layers))
    total += model.vocab_size * model.hidden_size * b * (1 if model.tie_word_embeddings else 2)
    return total + model.hidden_size * b


def _unquantized(model: ModelSpec) -> ModelSpec:
    from dataclasses import replace

    return replace(model, quantization=None) if model.quantization else model


def default_max_num_batched_tokens(gpu_memory_mib: int, gpu_name: str) -> int:
    """vLLM's default for the OpenAI server with chunked prefill (vllm/engine/arg_utils.py
    ``_set_default_args``): 8192 on GPUs with >= 70 GiB that are not A100s, else 2048."""
    if gpu_memory_mib * MIB >= 70 * GIB and "a100" not in gpu_name.lower():
        return 8192
    return 2048


def activation_bytes(
    model: ModelSpec, tp: int, dtype_bytes: int, batched_tokens: int, max_num_seqs: int, last_stage: bool
) -> int:
    """Peak activation of vLLM's profile run on one GPU (an estimate, see docs/planner.md).

    Per batched token: the residual and normed hidden states (4 x hidden), the QKV output, and the
    MLP's gate/up output plus the activated half (3 x intermediate / TP); on the last stage also the
    sampler's dummy run: max_num_seqs x vocab float32 logits, twice (logits and probabilities)."""
    if model.is_moe:
        inter = max(
            model.intermediate_size,
            (model.num_experts_per_tok + model.n_shared_experts) * model.moe_intermediate_size,
        )
    else:
        inter = model.intermediate_size
    if model.is_mla:
        qkv = model.num_attention_heads // tp * (model.qk_nope_head_dim + model.qk_rope_head_dim) * 2
    else:
        qkv = (model.num_attention_heads // tp + 2 * kv_heads_per_rank(model, tp)) * model.head_dim
    per_token = 4 * model.hidden_size + qkv + 3 * math.ceil(inter / tp)
    total = batched_tokens * per_token * dtype_bytes
    if last_stage:
        total += max_num_seqs * model.vocab_size * 4 * 2
    return total
