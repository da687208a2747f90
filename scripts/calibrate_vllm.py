#!/usr/bin/env python3
"""Calibrate the planner's memory model against vLLM's own accounting (issue 18).

On a lent GPU larger than a V100, vLLM is started once per case with the V100 flags the planner emits
(``--dtype float16 --attention-backend TRITON_ATTN --disable-custom-all-reduce``), a real
R1-distill shape with dummy weights (``--load-format dummy``: the registry's config.json, a generated
tokenizer), and ``--gpu-memory-utilization`` chosen so that vLLM's requested memory
(utilization x the card's total as CUDA reports it) equals 0.90 x a V100's total as CUDA reports it
there: the budget vLLM would have on the V100. ``--max-num-batched-tokens`` is pinned to what vLLM
picks by itself on a V100 (2048: under 70 GiB), not what it picks on the lent card (8192).

vLLM's start-up lines ("Available KV cache memory", "GPU KV cache size", "Maximum concurrency",
"Actual usage is ...") or its refusal are recorded per case; the server is stopped as soon as they
are logged. docs/planner.md has the calibration table, docs/gpu-proof.md the run.

    calibrate_vllm.py models DEST --tokenizer-from DIR [NAME ...]   config.json + tokenizer per model
    calibrate_vllm.py run --out DIR --models DIR --python PY [--cases ID,...] [--deadline S]
    calibrate_vllm.py record --case ID --log LOG --unit vllm.service --total BYTES --out DIR
    calibrate_vllm.py parse LOG                                      the recorded figures as JSON

Standard library only (runs on the lent machine with the repository's src/ on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
GIB = 1 << 30

# What CUDA reports as a V100's total memory (cudaMemGetInfo, i.e. torch.cuda.mem_get_info()[1], what
# vLLM multiplies by gpu_memory_utilization): 31.75 GiB on the 32 GB boards, 15.78 GiB on the 16 GB
# ones. nvidia-smi prints the same 32510 / 16160 MiB with the R470 driver; newer drivers print
# 32768 / 16384 MiB (tests/fixtures/nvidia-smi/v100-*.csv).
V100_CUDA_TOTAL_MIB = {"32gb": 32510, "16gb": 16160}
UTILIZATION = 0.90
MAX_NUM_SEQS = 128
V100_MAX_NUM_BATCHED_TOKENS = 2048  # vllm/engine/arg_utils.py: < 70 GiB -> OpenAI server default 2048

# id -> (registry model, V100 board, max_model_len, what the planner says: "fit" or "refuse")
CASES: dict[str, tuple[str, str, int, str]] = {
    "qwen1.5b-32gb-32k": ("DeepSeek-R1-Distill-Qwen-1.5B", "32gb", 32768, "fit"),
    "qwen1.5b-32gb-4k": ("DeepSeek-R1-Distill-Qwen-1.5B", "32gb", 4096, "fit"),
    "qwen1.5b-16gb-32k": ("DeepSeek-R1-Distill-Qwen-1.5B", "16gb", 32768, "fit"),
    "qwen7b-32gb-32k": ("DeepSeek-R1-Distill-Qwen-7B", "32gb", 32768, "fit"),
    "qwen7b-32gb-4k": ("DeepSeek-R1-Distill-Qwen-7B", "32gb", 4096, "fit"),
    "llama8b-32gb-32k": ("DeepSeek-R1-Distill-Llama-8B", "32gb", 32768, "fit"),
    "qwen14b-32gb-32k": ("DeepSeek-R1-Distill-Qwen-14B", "32gb", 32768, "refuse"),
    "qwen7b-16gb-32k": ("DeepSeek-R1-Distill-Qwen-7B", "16gb", 32768, "refuse"),
}

# The lines kept as fixtures (tests/fixtures/vllm-calibration/) and what they hold.
_PATTERNS = {
    "available_kv_gib": re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    "kv_tokens": re.compile(r"GPU KV cache size: ([\d,]+) tokens"),
    "max_concurrency": re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"),
    "actual_usage": re.compile(
        r"Actual usage is ([\d.]+) GiB for weight, ([\d.]+) GiB for peak activation, ([\d.]+) GiB for "
        r"non-torch memory, and ([\d.]+) GiB for CUDAGraph memory"
    ),
    "requested": re.compile(r"Desired GPU memory utilization is \(([\d.]+), ([\d.]+) GiB\)"),
    "cudagraph_pool": re.compile(
        r"CUDA graph pool memory: ([\d.]+) GiB \(actual\), ([\d.]+) GiB \(estimated\)"
    ),
    "cudagraph_util": re.compile(r"CUDA graph memory profiling is enabled"),
    "weights_loaded": re.compile(r"Model loading took ([\d.]+) GiB"),
    "attention_backend": re.compile(r"Using (\w+) (?:attention )?backend"),
}
_REFUSAL = re.compile(
    r"(ValueError|RuntimeError|torch\.OutOfMemoryError|CUDA out of memory)[^\n]*"
    r"(KV cache|cache blocks|memory|max seq len)[^\n]*"
)
_DONE = ("Actual usage is",)


def keep_line(line: str) -> bool:
    """Whether a log line belongs in the fixture (memory accounting, the refusal, the backend)."""
    keys = (
        "Available KV cache memory",
        "GPU KV cache size",
        "Maximum concurrency",
        "Actual usage is",
        "CUDA graph pool memory",
        "CUDA graph memory profiling",
        "Model loading took",
        "Graph capturing finished",
        "attention backend",
        "Using AttentionBackendEnum",
        "max_num_batched_tokens",
        "Chunked prefill is enabled",
        "Casting torch.bfloat16",
        "Error",
        "error:",
        "Free memory on device",
    )
    return any(k in line for k in keys) and "Traceback" not in line


def parse_log(text: str) -> dict[str, Any]:
    """vLLM's memory figures from a start-up log (the last occurrence of each line)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        for key, rx in _PATTERNS.items():
            m = rx.search(line)
            if not m:
                continue
            if key == "available_kv_gib":
                out[key] = float(m.group(1))
            elif key == "kv_tokens":
                out[key] = int(m.group(1).replace(",", ""))
            elif key == "max_concurrency":
                out["concurrency_tokens"] = int(m.group(1).replace(",", ""))
                out[key] = float(m.group(2))
            elif key == "actual_usage":
                w, a, n, g = (float(x) for x in m.groups())
                out[key] = {"weights_gib": w, "activation_gib": a, "non_torch_gib": n, "cudagraph_gib": g}
            elif key == "requested":
                out["requested"] = {"utilization": float(m.group(1)), "gib": float(m.group(2))}
            elif key == "cudagraph_pool":
                out["cudagraph_pool"] = {"actual_gib": float(m.group(1)), "estimated_gib": float(m.group(2))}
            elif key == "cudagraph_util":
                out["cudagraph_profiling"] = True
            elif key == "weights_loaded":
                out["weights_loaded_gib"] = float(m.group(1))
            elif key == "attention_backend":
                out.setdefault("attention_backends", [])
                if m.group(1) not in out["attention_backends"]:
                    out["attention_backends"].append(m.group(1))
    refusal = [m.group(0)[:600] for m in _REFUSAL.finditer(text)]
    if refusal:
        out["refusal"] = refusal[-1]
    out["started"] = "kv_tokens" in out and "refusal" not in out
    return out


# ---------------------------------------------------------------------------------------------------
# models: the registry's config.json (what the planner reads) + a generated tokenizer


def hf_config(name: str) -> dict[str, Any]:
    """A Hugging Face config.json for a registry model, from the numbers the planner itself uses."""
    sys.path.insert(0, str(REPO / "src"))
    from r1deploy.planner.models import load_model

    m = load_model(name)
    cfg: dict[str, Any] = {
        "architectures": [m.architecture],
        "model_type": m.model_type,
        "hidden_act": "silu",
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "num_attention_heads": m.num_attention_heads,
        "num_hidden_layers": m.num_hidden_layers,
        "num_key_value_heads": m.num_key_value_heads,
        "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_position_embeddings,
        "tie_word_embeddings": m.tie_word_embeddings,
        "torch_dtype": m.torch_dtype,
        "use_cache": True,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    }
    if m.model_type == "qwen2":
        # deepseek-ai/DeepSeek-R1-Distill-Qwen-*: Qwen2.5 configs (sliding window off).
        cfg.update(
            bos_token_id=151643,
            eos_token_id=151643,
            rms_norm_eps=1e-5 if m.hidden_size >= 5120 else 1e-6,
            rope_theta=1000000.0 if m.hidden_size >= 5120 else 10000,
            sliding_window=4096 if m.hidden_size < 5120 else 131072,
            max_window_layers=m.num_hidden_layers,
            use_sliding_window=False,
            use_mrope=False,
        )
    else:
        cfg.update(
            bos_token_id=128000,
            eos_token_id=128001,
            rms_norm_eps=1e-5,
            rope_theta=500000.0,
            rope_scaling=m.rope_scaling,
            attention_bias=m.o_bias,
            mlp_bias=m.mlp_bias,
            pretraining_tp=1,
            head_dim=m.head_dim,
        )
    return cfg


def cmd_models(args: argparse.Namespace) -> int:
    names = args.names or sorted({c[0] for c in CASES.values()})
    for name in names:
        d = args.dest / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(hf_config(name), indent=2, sort_keys=True) + "\n")
        if args.tokenizer_from:
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(args.tokenizer_from / f, d / f)
        print(d)
    return 0


# ---------------------------------------------------------------------------------------------------
# run: one vLLM start per case


def cuda_total_bytes(python: str) -> int:
    code = "import torch; print(torch.cuda.mem_get_info()[1])"
    return int(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)


def vllm_argv(python: str, model_dir: Path, name: str, max_len: int, util: float, port: int) -> list[str]:
    """The planner's V100 arguments for TP 1 on one GPU (r1deploy plan --compute-capability 7.0) plus
    what the calibration adds: dummy weights, the emulated budget, the V100's batched-token default."""
    return [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", name.lower(),
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float16", "--tensor-parallel-size", "1", "--pipeline-parallel-size", "1",
        "--max-model-len", str(max_len), "--gpu-memory-utilization", repr(util),
        "--max-num-seqs", str(MAX_NUM_SEQS), "--distributed-executor-backend", "uni",
        "--disable-custom-all-reduce", "--attention-backend", "TRITON_ATTN",
        "--load-format", "dummy", "--max-num-batched-tokens", str(V100_MAX_NUM_BATCHED_TOKENS),
    ]  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def gpu_processes() -> int:
    r = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True, text=True
    )
    return len([x for x in r.stdout.splitlines() if x.strip()])


def run_case(case_id: str, args: argparse.Namespace, total: int) -> dict[str, Any]:
    model, board, max_len, expect = CASES[case_id]
    v100_mib = V100_CUDA_TOTAL_MIB[board]
    util = UTILIZATION * v100_mib * MIB / total
    argv = vllm_argv(args.python, args.models / model, model, max_len, util, 8100)
    log_path = args.out / f"{case_id}.log"
    env = dict(os.environ, VLLM_USE_FLASHINFER_SAMPLER="0", HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1")
    env.pop("PYTHONPATH", None)
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        reason = "timeout"
        while time.monotonic() - t0 < args.case_timeout:
            time.sleep(1)
            text = log_path.read_text(errors="replace")
            if any(d in text for d in _DONE):
                time.sleep(2)
                reason = "figures logged"
                break
            if proc.poll() is not None:
                reason = f"exited rc={proc.returncode}"
                break
        stop(proc)
    wall = time.monotonic() - t0
    for _ in range(30):
        if gpu_processes() == 0:
            break
        time.sleep(1)
    text = log_path.read_text(errors="replace")
    rec: dict[str, Any] = {
        "case": case_id,
        "model": model,
        "v100_board": board,
        "v100_cuda_total_mib": v100_mib,
        "budget_bytes": int(UTILIZATION * v100_mib * MIB),
        "device_cuda_total_bytes": total,
        "gpu_memory_utilization": util,
        "max_model_len": max_len,
        "max_num_seqs": MAX_NUM_SEQS,
        "max_num_batched_tokens": V100_MAX_NUM_BATCHED_TOKENS,
        "planner_expects": expect,
        "argv": argv[1:],
        "stopped_because": reason,
        "wall_s": round(wall, 1),
        "vllm": parse_log(text),
        "lines": [ln for ln in text.splitlines() if keep_line(ln)][-60:],
    }
    (args.out / f"{case_id}.json").write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def cmd_record(args: argparse.Namespace) -> int:
    """A case record from a vLLM log written by another run (the GPU proof's rendered vllm.service)."""
    sys.path.insert(0, str(REPO / "scripts" / "gpu_proof"))
    import units

    model, board, max_len, expect = CASES[args.case]
    v100_mib = V100_CUDA_TOTAL_MIB[board]
    unit = units.read_unit(args.unit)
    argv = units.split_command(units.service(unit, "ExecStart")[0])[1]
    text = args.log.read_text(errors="replace")
    rec = {
        "case": args.case,
        "model": model,
        "v100_board": board,
        "v100_cuda_total_mib": v100_mib,
        "budget_bytes": int(UTILIZATION * v100_mib * MIB),
        "device_cuda_total_bytes": args.total,
        "gpu_memory_utilization": float(argv[argv.index("--gpu-memory-utilization") + 1]),
        "max_model_len": max_len,
        "max_num_seqs": MAX_NUM_SEQS,
        "max_num_batched_tokens": V100_MAX_NUM_BATCHED_TOKENS,
        "planner_expects": expect,
        "argv": argv[1:],
        "stopped_because": f"recorded from {args.log.name} ({args.source})",
        "vllm": parse_log(text),
        "lines": [ln for ln in text.splitlines() if keep_line(ln)][-60:],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.case}.json").write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(rec["vllm"]))
    return 0


def snapshot(out: Path) -> None:
    dest = os.environ.get("OUT")
    if dest:
        subprocess.run(
            ["tar", "-czf", f"{dest}/calibration.tar.gz", "-C", str(out.parent), out.name], check=False
        )


def cmd_run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    total = cuda_total_bytes(args.python)
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,compute_cap,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    (args.out / "device.json").write_text(json.dumps({"cuda_total_bytes": total, "nvidia_smi": smi}) + "\n")
    print(f"device: {smi}; CUDA total {total / MIB:.0f} MiB", flush=True)
    t_start = time.monotonic()
    ids = args.cases.split(",") if args.cases else list(CASES)
    for cid in ids:
        left = args.deadline - (time.monotonic() - t_start)
        if left < args.min_case_s:
            print(f"{cid}: skipped, {left:.0f} s left", flush=True)
            continue
        rec = run_case(cid, args, total)
        v = rec["vllm"]
        print(
            f"{cid}: {rec['stopped_because']} in {rec['wall_s']} s; "
            f"util {rec['gpu_memory_utilization']:.4f}; "
            f"KV {v.get('available_kv_gib')} GiB, {v.get('kv_tokens')} tokens, "
            f"concurrency {v.get('max_concurrency')}; usage {v.get('actual_usage')}; "
            f"refusal {v.get('refusal', '-')[:300]}",
            flush=True,
        )
        snapshot(args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("models")
    m.add_argument("dest", type=Path)
    m.add_argument("--tokenizer-from", type=Path)
    m.add_argument("names", nargs="*")
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--models", type=Path, required=True)
    r.add_argument("--python", default="/opt/r1deploy/venv/bin/python")
    r.add_argument("--cases", default="")
    r.add_argument("--deadline", type=float, default=540, help="seconds for all cases")
    r.add_argument("--case-timeout", type=float, default=240)
    r.add_argument("--min-case-s", type=float, default=100, help="start no case with less time left")
    rc = sub.add_parser("record")
    rc.add_argument("--case", required=True, choices=sorted(CASES))
    rc.add_argument("--log", type=Path, required=True)
    rc.add_argument("--unit", type=Path, required=True, help="the vllm.service that ran")
    rc.add_argument("--total", type=int, required=True, help="the card's CUDA total, bytes")
    rc.add_argument("--source", default="scripts/gpu_proof.sh run")
    rc.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("parse")
    p.add_argument("log", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "models":
        return cmd_models(args)
    if args.cmd == "run":
        return cmd_run(args)
    if args.cmd == "record":
        return cmd_record(args)
    print(json.dumps(parse_log(args.log.read_text(errors="replace")), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
