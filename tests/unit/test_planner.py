"""r1deploy.planner: numbers computed by hand from each model's config.json, vLLM's sharding rules,
and the refusals a user needs before anything is installed."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import yaml

from r1deploy.planner import MODELS, PlanRequest, from_config, load_gpu, load_model, make_plan, valid_tp_sizes
from r1deploy.planner import memory as mem
from r1deploy.planner.plan import (
    CLI_LABELS,
    Layout,
    attention_backend,
    choose_layout,
    custom_all_reduce_disabled,
    executor_backend,
    read_kv_cache_bytes,
    read_utilization,
    resolve_device,
    vllm_args,
)

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30


def plan(**kw: object) -> dict:
    return make_plan(PlanRequest(**kw))  # type: ignore[arg-type]


def dense_params(
    layers: int, hidden: int, heads: int, kv: int, head_dim: int, inter: int, vocab: int, bias: bool
) -> int:
    """Written out independently of the planner: Qwen2/Llama decoder, untied lm_head."""
    q, kvd = heads * head_dim, kv * head_dim
    attn = hidden * q + 2 * hidden * kvd + q * hidden + ((q + 2 * kvd) if bias else 0)
    mlp = 3 * hidden * inter
    return layers * (attn + mlp + 2 * hidden) + 2 * vocab * hidden + hidden


# name: (layers, hidden, heads, kv heads, head_dim, intermediate, vocab, qkv bias, published size in B)
CONFIGS = {
    "DeepSeek-R1-Distill-Qwen-1.5B": (28, 1536, 12, 2, 128, 8960, 151936, True, 1.78),
    "DeepSeek-R1-Distill-Qwen-7B": (28, 3584, 28, 4, 128, 18944, 152064, True, 7.62),
    "DeepSeek-R1-Distill-Llama-8B": (32, 4096, 32, 8, 128, 14336, 128256, False, 8.03),
    "DeepSeek-R1-Distill-Qwen-14B": (48, 5120, 40, 8, 128, 13824, 152064, True, 14.77),
    "DeepSeek-R1-Distill-Qwen-32B": (64, 5120, 40, 8, 128, 27648, 152064, True, 32.76),
    "DeepSeek-R1-Distill-Llama-70B": (80, 8192, 64, 8, 128, 28672, 128256, False, 70.55),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_count_is_exact_from_config(name: str) -> None:
    *shape, published = CONFIGS[name]
    expected = dense_params(*shape)  # type: ignore[arg-type]
    assert mem.parameter_count(load_model(name)) == expected
    assert round(expected / 1e9, 2) == published


def test_full_r1_parameter_count_is_671b() -> None:
    assert round(mem.parameter_count(load_model("deepseek-r1")) / 1e9) == 671


def test_checkpoint_bytes_equal_the_real_safetensors_file(tmp_path: Path) -> None:
    """The generated Qwen2 checkpoint: the planner's byte count equals the tensors' bytes on disk."""
    from r1deploy.tinymodel import generate

    folder = generate(tmp_path / "tiny")
    blob = (folder / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    on_disk = sum(
        v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"
    )
    assert mem.checkpoint_bytes(load_model(str(folder))) == on_disk


@pytest.mark.parametrize(
    ("layers", "pp", "parts"),
    [
        (64, 2, [32, 32]),
        (61, 2, [31, 30]),
        (80, 3, [27, 27, 26]),
        (22, 4, [5, 6, 6, 5]),
        (61, 4, [15, 15, 16, 15]),
    ],
)
def test_pipeline_split_follows_vllm_get_pp_indices(layers: int, pp: int, parts: list[int]) -> None:
    assert mem.stage_layers(layers, pp) == parts


@pytest.mark.parametrize(
    ("name", "tp", "kv_bytes_per_token"),
    [
        # 2 x layers x KV heads per rank x head_dim x 2 bytes
        ("DeepSeek-R1-Distill-Qwen-32B", 1, 2 * 64 * 8 * 128 * 2),
        ("DeepSeek-R1-Distill-Qwen-32B", 4, 2 * 64 * 2 * 128 * 2),
        ("DeepSeek-R1-Distill-Qwen-32B", 8, 2 * 64 * 1 * 128 * 2),
        ("DeepSeek-R1-Distill-Llama-70B", 16, 2 * 80 * 1 * 128 * 2),  # TP > KV heads: replicated, 1 per rank
        ("DeepSeek-R1-Distill-Qwen-1.5B", 4, 2 * 28 * 1 * 128 * 2),
    ],
)
def test_kv_bytes_per_token_per_gpu(name: str, tp: int, kv_bytes_per_token: int) -> None:
    m = load_model(name)
    assert mem.stage_bytes(m, tp, 1, 2, 2)[0].kv_per_token == kv_bytes_per_token


def test_weights_per_gpu_tp4_pp2_put_embedding_first_and_lm_head_last() -> None:
    m = load_model("DeepSeek-R1-Distill-Qwen-32B")
    _, h, heads, kv, hd, inter, vocab, _, _ = CONFIGS[m.name]
    per_layer = (h * heads * hd + 2 * h * kv * hd + heads * hd * h) // 4 + (heads + 2 * kv) * hd // 4
    per_layer += 3 * h * inter // 4 + 2 * h
    emb = vocab // 4 * h
    s0, s1 = mem.stage_bytes(m, 4, 2, 2, 2)
    assert s0.weights == (32 * per_layer + emb) * 2
    assert s1.weights == (32 * per_layer + emb + h) * 2


def test_tied_embeddings_cost_one_copy_without_pp_and_two_with_pp() -> None:
    cfg = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 256,
        "intermediate_size": 512,
        "vocab_size": 1024,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    m = from_config(cfg)
    one = mem.stage_bytes(m, 1, 1, 2, 2)[0].weights
    two = sum(s.weights for s in mem.stage_bytes(m, 1, 2, 2, 2))
    assert two - one == 1024 * 256 * 2  # the last stage's own copy as lm_head


def test_reference_deployment_32b_on_two_4x_v100_nodes() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4)
    assert p["ok"], p["errors"]
    assert (p["dtype"], p["tensor_parallel_size"], p["pipeline_parallel_size"], p["gpus_used"]) == (
        "float16",
        4,
        2,
        8,
    )
    assert p["distributed_executor_backend"] == "ray"
    assert p["weights_gib_per_gpu"] == pytest.approx(61.03 / 8, abs=0.02)
    args = p["vllm_args"]
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--dtype"] == "float16"
    assert pairs["--tensor-parallel-size"] == "4" and pairs["--pipeline-parallel-size"] == "2"
    assert pairs["--max-model-len"] == "32768" and pairs["--max-num-seqs"] == "128"
    assert pairs["--gpu-memory-utilization"] == "0.9"
    assert pairs["--distributed-executor-backend"] == "ray"
    assert "--disable-custom-all-reduce" in args
    assert args[args.index("--attention-backend") + 1] == "TRITON_ATTN"


def test_kv_budget_arithmetic_matches_vllm_block_accounting() -> None:
    """usable = memory x utilization - weights - allowance; blocks of 16 tokens; min over stages."""
    p = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4)
    usable = int(32768 * (1 << 20) * 0.9)
    for stage in p["stages"]:
        assert stage["weights_gib_per_gpu"] + stage["allowance_gib"] + stage[
            "kv_cache_gib_per_gpu"
        ] == pytest.approx(usable / GIB, abs=0.005)
    kv = p["kv_cache_bytes_per_gpu"]
    blocks = kv // (16 * p["kv_bytes_per_token_per_gpu"])
    assert p["kv_cache_tokens"] == blocks * 16
    assert p["max_full_length_sequences"] == blocks // math.ceil(32768 / 16)


def test_one_node_tp4_holds_about_five_32k_sequences_and_pp2_about_four_times_more() -> None:
    single = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=1, gpus_per_node=4)
    double = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4)
    assert single["ok"] and double["ok"]
    assert 4 <= single["max_full_length_sequences"] <= 6  # research 4.3: "about 5 concurrent 32k sequences"
    assert double["max_full_length_sequences"] >= 3 * single["max_full_length_sequences"]


@pytest.mark.parametrize(
    ("gpu", "dtype", "expected"),
    [
        ("v100-sxm2-32gb", "auto", "float16"),
        ("t4", "auto", "float16"),
        ("a100-80gb", "auto", "bfloat16"),
        ("h200", "auto", "bfloat16"),
        ("v100-sxm2-32gb", "float32", "float32"),
        ("a100-80gb", "half", "float16"),
    ],
)
def test_dtype_resolution(gpu: str, dtype: str, expected: str) -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-1.5B", gpu=gpu, nodes=1, gpus_per_node=1, dtype=dtype)
    assert p["ok"], p["errors"]
    assert p["dtype"] == expected


def test_float32_checkpoint_auto_is_cast_to_the_platform_preference(tmp_path: Path) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "hidden_size": 256,
        "vocab_size": 1000,
        "torch_dtype": "float32",
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert plan(model=str(tmp_path), gpu="a100-40gb", gpus_per_node=1)["dtype"] == "bfloat16"
    assert plan(model=str(tmp_path), gpu="v100-pcie-16gb", gpus_per_node=1)["dtype"] == "float16"


def test_explicit_bfloat16_on_volta_is_refused_with_the_dtype_half_fix() -> None:
    p = plan(
        model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4, dtype="bfloat16"
    )
    assert not p["ok"]
    assert p["vllm_args"] == []
    (err,) = p["errors"]
    assert "compute capability of at least 8.0" in err and "--dtype half" in err and "7.0" in err


def test_cpu_device_allows_every_dtype_and_uses_mp_without_gpu_memory_flag(tmp_path: Path) -> None:
    from r1deploy.tinymodel import generate

    folder = generate(tmp_path / "tiny")
    for dtype in ("float16", "bfloat16", "float32"):
        p = plan(model=str(folder), device="cpu", nodes=3, gpus_per_node=0, dtype=dtype, max_model_len=2048)
        assert p["ok"], p["errors"]
        assert p["distributed_executor_backend"] == "mp"
        assert "--gpu-memory-utilization" not in p["vllm_args"]
        assert "--disable-custom-all-reduce" not in p["vllm_args"]
        assert p["max_full_length_sequences"] is None  # no GPU memory rule on CPU


def test_cpu_kv_cache_bytes_must_hold_one_sequence(tmp_path: Path) -> None:
    from r1deploy.tinymodel import generate

    folder = generate(tmp_path / "tiny")
    m = load_model(str(folder))
    per_token = 2 * m.num_hidden_layers * m.num_key_value_heads * m.head_dim * 2
    ok = plan(
        model=str(folder), device="cpu", kv_cache_memory_bytes="256M", max_model_len=2048, dtype="float16"
    )
    assert ok["ok"]
    assert ok["kv_cache_tokens"] == (256 << 20) // (128 * per_token) * 128  # CPU blocks hold 128 tokens
    assert ok["vllm_args"][-2:] == ["--kv-cache-memory-bytes", str(256 << 20)]
    small = plan(model=str(folder), device="cpu", kv_cache_memory_bytes=per_token * 1000, max_model_len=4096)
    assert not small["ok"] and "--max-model-len" in small["errors"][0]


def test_single_gpu_uses_the_uni_executor() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-7B", gpu="a100-80gb", nodes=1, gpus_per_node=1)
    assert p["ok"] and p["distributed_executor_backend"] == "uni"
    assert "--attention-backend" not in p["vllm_args"]


@pytest.mark.parametrize(
    ("name", "limit", "valid"),
    [
        ("DeepSeek-R1-Distill-Qwen-32B", 16, [1, 2, 4, 8]),
        ("DeepSeek-R1-Distill-Qwen-7B", 8, [1, 2, 4]),
        ("DeepSeek-R1-Distill-Qwen-1.5B", 8, [1, 2, 4, 6]),
        ("DeepSeek-R1-Distill-Llama-70B", 16, [1, 2, 4, 8, 16]),
    ],
)
def test_valid_tensor_parallel_sizes(name: str, limit: int, valid: list[int]) -> None:
    assert valid_tp_sizes(load_model(name), limit) == valid


def test_tp_that_does_not_divide_the_heads_is_refused_with_the_valid_sizes() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4, tp=3, pp=2)
    assert not p["ok"]
    assert any("40 attention heads are not divisible by TP 3" in e and "1, 2, 4, 8" in e for e in p["errors"])


def test_default_layout_is_largest_valid_tp_per_node_and_pp_per_node() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-1.5B", gpu="v100-sxm2-32gb", nodes=1, gpus_per_node=8)
    assert (p["tensor_parallel_size"], p["pipeline_parallel_size"]) == (6, 1)
    assert any("2 GPU(s) per node stay idle" in w for w in p["warnings"])


def test_more_gpus_than_the_cluster_has_is_refused() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4, tp=4, pp=4)
    assert not p["ok"] and any("16 GPUs" in e and "2 node(s) x 4 = 8" in e for e in p["errors"])


def test_pp_larger_than_the_layers_is_refused() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-1.5B", gpu="a100-80gb", nodes=30, gpus_per_node=1, tp=1, pp=29)
    assert not p["ok"] and any("larger than the 28 layers" in e for e in p["errors"])


def test_tp_across_nodes_is_a_strict_warning() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4, tp=8, pp=1)
    assert p["ok"]
    strict = [f for f in p["findings"] if f["severity"] == "strict"]
    assert [f["code"] for f in strict] == ["tp-cross-node"]
    assert "r1deploy_ignore_preflight_errors" in strict[0]["fix"]


def test_weights_that_do_not_fit_are_refused() -> None:
    p = plan(model="DeepSeek-R1-Distill-Llama-70B", gpu="v100-sxm2-32gb", nodes=1, gpus_per_node=4)
    assert not p["ok"]
    assert any("needs 32.8" in e and "28.8 GiB is usable" in e for e in p["errors"]), p["errors"]


def test_a_context_that_does_not_fit_is_refused_with_the_length_that_would() -> None:
    p = plan(
        model="DeepSeek-R1-Distill-Llama-8B",
        gpu="v100-sxm2-32gb",
        nodes=1,
        gpus_per_node=1,
        max_model_len=131072,
    )
    assert not p["ok"]
    (err,) = p["errors"]
    assert "one 131072-token sequence needs 16.0 GiB" in err and "To serve at least one request" in err
    shorter = plan(
        model="DeepSeek-R1-Distill-Llama-8B", gpu="v100-sxm2-32gb", gpus_per_node=1, max_model_len=65536
    )
    assert shorter["ok"] and shorter["max_full_length_sequences"] >= 1


def test_max_model_len_beyond_the_models_context_is_refused() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-7B", gpu="h200", gpus_per_node=1, max_model_len=200000)
    assert not p["ok"] and "maximum context 131072" in p["errors"][0]


def test_full_r1_on_v100_is_refused_and_runs_on_eight_h200() -> None:
    v100 = plan(model="DeepSeek-R1", gpu="v100-sxm2-32gb", nodes=4, gpus_per_node=8)
    assert not v100["ok"]
    codes = {f["code"] for f in v100["findings"] if f["severity"] == "error"}
    assert {"quant-fp8", "full-r1-volta"} <= codes
    h200 = plan(model="deepseek-ai/DeepSeek-R1", gpu="h200", nodes=1, gpus_per_node=8)
    assert h200["ok"], h200["errors"]
    assert h200["tensor_parallel_size"] == 8 and h200["max_full_length_sequences"] >= 1


def _quantized(tmp_path: Path, method: str) -> str:
    cfg = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "num_hidden_layers": 64,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "hidden_size": 5120,
        "intermediate_size": 27648,
        "vocab_size": 152064,
        "torch_dtype": "float16",
        "max_position_embeddings": 131072,
        "quantization_config": {"quant_method": method, "bits": 4, "group_size": 128},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path / "config.json")


def test_awq_is_refused_below_75_and_gptq_runs_on_volta(tmp_path: Path) -> None:
    awq = plan(model=_quantized(tmp_path, "awq"), gpu="v100-sxm2-32gb", gpus_per_node=4)
    assert not awq["ok"] and any("AWQ" in e and "7.5" in e for e in awq["errors"])
    gptq = plan(model=_quantized(tmp_path, "gptq"), gpu="v100-sxm2-32gb", gpus_per_node=4)
    assert gptq["ok"]
    fp16 = plan(model="DeepSeek-R1-Distill-Qwen-32B", gpu="v100-sxm2-32gb", gpus_per_node=4)
    # 4-bit weights (+ group scales) are far smaller than fp16's; embeddings and lm_head stay 16-bit.
    assert gptq["weights_gib_per_gpu"] < 0.4 * fp16["weights_gib_per_gpu"]
    assert gptq["max_full_length_sequences"] > fp16["max_full_length_sequences"]


def test_names_are_case_insensitive_and_unknown_names_list_the_known_ones() -> None:
    assert load_model("deepseek-r1-distill-qwen-32b") is MODELS["deepseek-r1-distill-qwen-32b"]
    assert load_gpu("V100-SXM2-32GB").name == "v100-sxm2-32gb"
    assert load_gpu("Tesla V100-SXM2-32GB").name == "v100-sxm2-32gb"  # nvidia-smi's name works too
    p = plan(model="deepseek-r2", gpu="v200", gpus_per_node=1)
    assert not p["ok"]
    assert "DeepSeek-R1-Distill-Llama-70B" in p["errors"][0]
    assert "v100-sxm2-32gb" in p["errors"][1] and "h200" in p["errors"][1]


def test_model_by_path_to_folder_or_config(tmp_path: Path) -> None:
    cfg = _registry_as_config("DeepSeek-R1-Distill-Qwen-14B")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    by_folder = plan(model=str(tmp_path), gpu="v100-sxm2-32gb", gpus_per_node=4)
    by_name = plan(model="DeepSeek-R1-Distill-Qwen-14B", gpu="v100-sxm2-32gb", gpus_per_node=4)
    assert by_folder["ok"] and by_folder["vllm_args"] == by_name["vllm_args"]
    assert by_folder["weights_bytes_per_gpu"] == by_name["weights_bytes_per_gpu"]
    missing = plan(model=str(tmp_path / "nope" / "config.json"), gpu="t4", gpus_per_node=1)
    assert not missing["ok"] and "no such file" in missing["errors"][0]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"architectures": ["X"], "hidden_size": 8}))
    bad = plan(model=str(tmp_path / "bad"), gpu="t4", gpus_per_node=1)
    assert not bad["ok"] and "num_hidden_layers" in bad["errors"][0]


def _registry_as_config(name: str) -> dict:
    m = load_model(name)
    return {
        "architectures": [m.architecture],
        "model_type": m.model_type,
        "num_hidden_layers": m.num_hidden_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_key_value_heads,
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "vocab_size": m.vocab_size,
        "tie_word_embeddings": m.tie_word_embeddings,
        "torch_dtype": m.torch_dtype,
        "max_position_embeddings": m.max_position_embeddings,
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("tp", "4"), ("nodes", True), ("max_model_len", 0), ("gpu_memory_utilization", 1.5), ("dtype", "bf17")],
)
def test_bad_input_types_are_refused_by_name(field: str, value: object) -> None:
    kw: dict = {"model": "DeepSeek-R1-Distill-Qwen-7B", "gpu": "a100-80gb", "gpus_per_node": 1, field: value}
    p = plan(**kw)
    assert not p["ok"]
    assert any(f"--{field.replace('_', '-')}" in e or field in e for e in p["errors"]), p["errors"]


def test_replicas_alternative_is_offered_when_the_model_fits_one_node() -> None:
    p = plan(model="DeepSeek-R1-Distill-Qwen-7B", gpu="v100-sxm2-32gb", nodes=2, gpus_per_node=4)
    per_node = [a for a in p["alternatives"] if a["replicas"] == 2 and a["pipeline_parallel_size"] == 1]
    assert per_node and per_node[0]["fits"]
    assert "Throughput" in p["recommendation"] and "Context" in p["recommendation"]


# ---- the step functions of make_plan, each with the rule it holds ----------------------------------------


def test_device_auto_follows_the_gpu_count_of_the_hosts() -> None:
    assert resolve_device("auto", 0) == "cpu"  # what r1deploy_gpus.count says on a CPU-only host
    assert resolve_device("auto", 4) == "gpu"
    assert resolve_device("auto", False) == "gpu"  # a boolean is not a GPU count
    assert resolve_device("GPU", 0) == "gpu" and resolve_device(None, 0) == "gpu"
    assert resolve_device("tpu", 4) is None
    cpu = plan(
        model="DeepSeek-R1-Distill-Qwen-1.5B", device="auto", gpus_per_node=0, kv_cache_memory_bytes="4G"
    )
    assert cpu["ok"] and cpu["device"] == "cpu" and cpu["distributed_executor_backend"] == "mp"
    refused = plan(model="DeepSeek-R1-Distill-Qwen-1.5B", device="tpu")
    assert refused["errors"] == ["device must be gpu, cpu or auto, got 'tpu' [--device]."]


def test_executor_backend() -> None:
    assert executor_backend("cpu", 2, 1) == "mp"  # vLLM's CPU platform refuses Ray
    assert executor_backend("gpu", 1, 1) == "uni"
    assert executor_backend("gpu", 1, 2) == "ray" and executor_backend("gpu", 4, 1) == "ray"


@pytest.mark.parametrize(
    ("device", "cc", "wish", "disabled", "attention"),
    [
        ("gpu", (7, 0), False, True, "TRITON_ATTN"),  # V100: custom all-reduce hangs, no FlashAttention
        ("gpu", (7, 5), False, True, "TRITON_ATTN"),  # Turing: no FlashAttention either
        ("gpu", (8, 0), True, True, None),
        ("gpu", (9, 0), False, False, None),  # the user's wish decides from 8.0 on
        ("cpu", None, True, False, None),  # the CPU build has no custom all-reduce
    ],
)
def test_gpu_family_flags(
    device: str, cc: tuple[int, int] | None, wish: bool, disabled: bool, attention: str | None
) -> None:
    assert custom_all_reduce_disabled(device, cc, wish) is disabled
    assert attention_backend(device, cc) == attention


def test_h100_plan_carries_the_users_custom_all_reduce_wish() -> None:
    """What `r1deploy plan` prints is what the unit gets on every GPU family, not only on Volta."""
    kw = {"model": "DeepSeek-R1-Distill-Qwen-32B", "gpu": "h100-80gb", "nodes": 1, "gpus_per_node": 4}
    default = plan(**kw)
    assert default["ok"] and "--disable-custom-all-reduce" in default["vllm_args"]  # vllm_server's default
    enabled = plan(**kw, disable_custom_all_reduce=False)
    assert enabled["ok"] and "--disable-custom-all-reduce" not in enabled["vllm_args"]
    volta = plan(**{**kw, "gpu": "v100-sxm2-32gb"}, disable_custom_all_reduce=False)
    assert "--disable-custom-all-reduce" in volta["vllm_args"]  # the Volta rule wins over the wish
    wrong = plan(**kw, disable_custom_all_reduce="no")
    assert not wrong["ok"] and "disable custom all-reduce must be true or false" in wrong["errors"][0]


def test_vllm_args_keep_their_order() -> None:
    """A change of order rewrites the unit and restarts vLLM: the order is part of the contract."""
    args = vllm_args(
        "gpu",
        "float16",
        Layout(4, 2, 1, 2, 4),
        "ray",
        max_model_len=32768,
        gpu_memory_utilization=0.9,
        max_num_seqs=128,
        kv_cache_bytes=1 << 30,
        attention="TRITON_ATTN",
        disable_custom_all_reduce=True,
    )
    assert " ".join(args) == (
        "--dtype float16 --tensor-parallel-size 4 --pipeline-parallel-size 2 --max-model-len 32768 "
        "--gpu-memory-utilization 0.9 --max-num-seqs 128 --distributed-executor-backend ray "
        "--disable-custom-all-reduce --attention-backend TRITON_ATTN --kv-cache-memory-bytes 1073741824"
    )
    cpu = vllm_args(
        "cpu",
        "bfloat16",
        Layout(1, 1, 1, 3, 1),
        "mp",
        max_model_len=2048,
        gpu_memory_utilization=0.9,
        max_num_seqs=16,
        kv_cache_bytes=None,
        attention=None,
        disable_custom_all_reduce=False,
    )
    assert "--gpu-memory-utilization" not in cpu and cpu[-2:] == ["--distributed-executor-backend", "mp"]


def test_choose_layout_follows_vllms_advice() -> None:
    qwen32 = load_model("DeepSeek-R1-Distill-Qwen-32B")
    layout, findings = choose_layout(qwen32, "gpu", 2, 4, None, None, 1, dict(CLI_LABELS))
    assert (layout.tp, layout.pp, layout.gpus_used, layout.gpus_total) == (4, 2, 8, 8) and findings == []
    qwen7 = load_model("DeepSeek-R1-Distill-Qwen-7B")  # 28 heads: TP 6 is not valid, 4 is
    layout, findings = choose_layout(qwen7, "gpu", 1, 6, None, None, 1, dict(CLI_LABELS))
    assert (layout.tp, layout.pp) == (4, 1) and [f.code for f in findings] == ["tp-below-node"]
    layout, findings = choose_layout(qwen7, "cpu", 3, 1, None, 2, 1, dict(CLI_LABELS))
    assert (layout.tp, layout.pp) == (1, 2)
    assert [f.code for f in findings] == ["cpu-single-node", "cpu-pp-eager"]


def test_utilization_and_kv_bytes_are_read_with_their_defaults() -> None:
    findings: list = []
    assert read_utilization(None, "x", findings) == 0.9 and read_utilization(1, "x", findings) == 1.0
    assert (
        read_kv_cache_bytes("", "y", findings) is None and read_kv_cache_bytes("1G", "y", findings) == 1 << 30
    )
    assert findings == []
    assert read_utilization(True, "x", findings) == 0.9 and read_kv_cache_bytes("lots", "y", findings) is None
    assert [(f.code, f.subject) for f in findings] == [("utilization", "x"), ("kv-bytes", "y")]


def _planner_filter() -> object:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "r1deploy_planner.py"
    spec = importlib.util.spec_from_file_location("r1deploy_planner_filter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vllm_server_role_takes_every_flag_from_the_plan() -> None:
    """The role passes its wish and device auto; the plan's vllm_args are the unit's whole planned
    argument list (`r1deploy plan` shows what the unit runs), with no flag appended by the role."""
    tasks = yaml.safe_load((REPO / "roles/vllm_server/tasks/preflight.yml").read_text())
    request = next(t for t in tasks if "vllm_server_plan" in t.get("ansible.builtin.set_fact", {}))["vars"]
    assert request["__request"]["device"] == "auto"
    assert "vllm_server_disable_custom_all_reduce" in request["__request"]["disable_custom_all_reduce"]
    assemble = next(t for t in tasks if "__vllm_server_argv" in t.get("ansible.builtin.set_fact", {}))
    assert "--disable-custom-all-reduce" not in assemble["ansible.builtin.set_fact"]["__vllm_server_argv"]
    filt = _planner_filter()
    role = {"model": "DeepSeek-R1-Distill-Qwen-32B", "device": "auto", "gpu": "h100-80gb", "gpus_per_node": 4}
    wish = {**role, "disable_custom_all_reduce": True}
    assert "--disable-custom-all-reduce" in filt.r1deploy_plan(wish)["vllm_args"]  # type: ignore[attr-defined]
    enabled = {**role, "disable_custom_all_reduce": False}
    assert "--disable-custom-all-reduce" not in filt.r1deploy_plan(enabled)["vllm_args"]  # type: ignore[attr-defined]
    volta = {**enabled, "gpu": "v100-sxm2-32gb"}
    assert "--disable-custom-all-reduce" in filt.r1deploy_plan(volta)["vllm_args"]  # type: ignore[attr-defined]
    cpu = {**wish, "gpu": None, "gpus_per_node": 0}
    assert "--disable-custom-all-reduce" not in filt.r1deploy_plan(cpu)["vllm_args"]  # type: ignore[attr-defined]
