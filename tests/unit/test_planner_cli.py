"""`r1deploy plan` as a user runs it: exit codes, the JSON contract, the human table, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
R1 = [sys.executable, "-m", "r1deploy.cli", "plan"]
JSON_FIELDS = {
    "ok": bool,
    "errors": list,
    "warnings": list,
    "dtype": str,
    "tensor_parallel_size": int,
    "pipeline_parallel_size": int,
    "replicas": int,
    "gpus_used": int,
    "weights_gib_per_gpu": float,
    "kv_cache_gib_per_gpu": float,
    "max_full_length_sequences": int,
    "vllm_args": list,
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*R1, *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=60)


def test_json_plan_for_the_reference_launch_has_the_contract_fields() -> None:
    r = run("--model", "DeepSeek-R1-Distill-Qwen-32B", "--gpu", "V100-SXM2-32GB", "--nodes", "2",
            "--gpus-per-node", "4", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    for field, kind in JSON_FIELDS.items():
        assert isinstance(plan[field], kind), (field, plan[field])
    assert plan["ok"] and plan["errors"] == []
    assert plan["dtype"] == "float16" and plan["replicas"] == 1 and plan["gpus_used"] == 8
    assert " ".join(plan["vllm_args"]).startswith(
        "--dtype float16 --tensor-parallel-size 4 --pipeline-parallel-size 2"
    )


def test_custom_all_reduce_follows_the_role_default_the_flag_and_the_volta_rule() -> None:
    """The same wish the vllm_server role passes (vllm_server_disable_custom_all_reduce, default true)."""
    a100 = ("--model", "DeepSeek-R1-Distill-Qwen-7B", "--gpu", "a100-80gb", "--gpus-per-node", "2", "--json")
    default = json.loads(run(*a100).stdout)["vllm_args"]
    enabled = json.loads(run(*a100, "--enable-custom-all-reduce").stdout)["vllm_args"]
    assert "--disable-custom-all-reduce" in default and "--disable-custom-all-reduce" not in enabled
    v100 = json.loads(run(*a100[:3], "v100-sxm2-32gb", *a100[4:], "--enable-custom-all-reduce").stdout)
    assert "--disable-custom-all-reduce" in v100["vllm_args"]  # Volta: never, whatever is asked


def test_invalid_plan_exits_2_and_lists_every_reason() -> None:
    r = run("--model", "deepseek-r1-distill-qwen-32b", "--gpu", "v100-sxm2-32gb", "--nodes", "1",
            "--gpus-per-node", "4", "--tp", "3", "--dtype", "bfloat16", "--json")  # fmt: skip
    assert r.returncode == 2
    plan = json.loads(r.stdout)
    assert not plan["ok"] and plan["vllm_args"] == []
    text = " ".join(plan["errors"])
    assert "--dtype half" in text and "not divisible by TP 3" in text


def test_human_table_shows_weights_kv_sequences_flags_and_warnings() -> None:
    r = run(
        "--model",
        "DeepSeek-R1-Distill-Qwen-32B",
        "--gpu",
        "v100-sxm2-32gb",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
    )
    assert r.returncode == 0
    for needle in ("VALID", "weights per GPU", "KV cache per GPU", "full-length sequences", "TP 4 x PP 2",
                   "--disable-custom-all-reduce", "Recommendation:", "Warnings:"):  # fmt: skip
        assert needle in r.stdout, needle
    bad = run("--model", "DeepSeek-R1-Distill-Llama-70B", "--gpu", "v100-sxm2-32gb", "--gpus-per-node", "4")
    assert bad.returncode == 2 and "INVALID" in bad.stdout and "Errors:" in bad.stdout


def test_unknown_names_list_the_known_ones() -> None:
    r = run("--model", "gpt-5", "--gpu", "v100-sxm2-32gb", "--gpus-per-node", "1", "--json")
    assert r.returncode == 2
    assert "DeepSeek-R1-Distill-Qwen-32B" in json.loads(r.stdout)["errors"][0]
    r = run("--model", "DeepSeek-R1-Distill-Qwen-7B", "--gpu", "v101", "--gpus-per-node", "1", "--json")
    assert r.returncode == 2 and "v100-pcie-32gb" in json.loads(r.stdout)["errors"][0]


def test_bad_arguments_exit_2_with_usage() -> None:
    for args in (["--model", "x", "--gpus-per-node", "0"], ["--model", "x", "--gpus-per-node", "four"],
                 ["--model", "x", "--gpus-per-node", "1", "--gpu-memory-utilization", "1.2"],
                 ["--model", "x", "--gpus-per-node", "1", "--dtype", "bf8"], ["--gpu", "t4"],
                 ["--model", "DeepSeek-R1-Distill-Qwen-7B", "--gpu", "t4"]):  # fmt: skip
        r = run(*args)
        assert r.returncode == 2, args
        assert "usage:" in r.stderr, args


def test_cpu_plan_needs_no_gpu() -> None:
    r = run("--model", "DeepSeek-R1-Distill-Qwen-1.5B", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stdout
    plan = json.loads(r.stdout)
    assert plan["distributed_executor_backend"] == "mp" and plan["gpus_used"] == 0


def test_plan_from_a_gpu_fact_file_with_only_the_standard_library(tmp_path: Path) -> None:
    """What the GPU-machine run does: the fact from nvidia-smi output, then a plan from that fact,
    with a bare interpreter (no Ansible, no CLI dependencies)."""
    fixture = REPO / "tests" / "fixtures" / "nvidia-smi" / "h200-x1.csv"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")}
    facts = subprocess.run(
        [sys.executable, "-S", "-m", "r1deploy.gpufacts", "--nvidia-smi-output", str(fixture)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (tmp_path / "facts.json").write_text(facts.stdout)
    r = subprocess.run(
        [
            sys.executable,
            "-S",
            "-m",
            "r1deploy.planner",
            "--model",
            "DeepSeek-R1-Distill-Qwen-32B",
            "--gpu-facts",
            str(tmp_path / "facts.json"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["gpu"]["name"] == "h200" and plan["gpu"]["memory_mib"] == 143771
    assert plan["dtype"] == "bfloat16" and plan["distributed_executor_backend"] == "uni"
    assert "--attention-backend" not in plan["vllm_args"]
