"""Stage 1 as users run it: the real `ansible-playbook playbooks/boilerplate.yml` against inventories
with one mistake each. Stage 1 connects to no host, so these run without the lab."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "inventories" / "sample"
PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def inventory(tmp_path: Path, hosts_edit: Any = None, extra: dict[str, Any] | None = None,
              host_vars: dict[str, dict[str, Any]] | None = None) -> Path:  # fmt: skip
    inv = tmp_path / "inv"
    shutil.copytree(SAMPLE, inv)
    if hosts_edit is not None:
        data = yaml.safe_load((inv / "hosts.yml").read_text())
        hosts_edit(data)
        (inv / "hosts.yml").write_text(yaml.safe_dump(data))
    if extra:
        (inv / "group_vars" / "all" / "zz_test.yml").write_text(yaml.safe_dump(extra))
    for host, values in (host_vars or {}).items():
        (inv / "host_vars").mkdir(exist_ok=True)
        (inv / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(values))
    return inv


def boilerplate(inv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLAYBOOK, "-i", str(inv), "playbooks/boilerplate.yml", *args],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def refused(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "Preflight (inventory) found" in out, out[-3000:]
    for needle in needles:
        assert needle in out, (needle, out[-3000:])


def test_sample_inventory_passes_and_shows_the_plan(tmp_path: Path) -> None:
    r = boilerplate(inventory(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:]
    assert "TP 4 x PP 2" in r.stdout and "--disable-custom-all-reduce" in r.stdout
    assert "changed=0" in r.stdout and "changed=1" not in r.stdout


def test_check_mode_runs_the_same_checks(tmp_path: Path) -> None:
    r = boilerplate(inventory(tmp_path, extra={"vllm_server_dtype": "bfloat16"}), "--check")
    refused(r, "compute capability of at least 8.0", "--dtype half", "[vllm_server_dtype]")


def _two_heads(d: dict) -> None:
    d["all"]["children"]["gpu_nodes"]["children"]["ray_head"]["hosts"]["gpu03"] = {
        "ansible_host": "10.0.0.13", "r1deploy_node_ip": "10.0.0.13"}  # fmt: skip


def _no_frontend(d: dict) -> None:
    d["all"]["children"]["frontend"]["hosts"] = {}


def _head_also_worker(d: dict) -> None:
    d["all"]["children"]["gpu_nodes"]["children"]["ray_workers"]["hosts"]["gpu01"] = {}


def _same_machine_twice(d: dict) -> None:
    d["all"]["children"]["frontend"]["hosts"]["web01"]["ansible_host"] = "10.0.0.11"


def _no_node_ip(d: dict) -> None:
    del d["all"]["children"]["gpu_nodes"]["children"]["ray_workers"]["hosts"]["gpu02"]["r1deploy_node_ip"]


def _bad_node_ip(d: dict) -> None:
    d["all"]["children"]["frontend"]["hosts"]["web01"]["r1deploy_node_ip"] = "10.0.0.300"


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (_two_heads, ["ray_head: the ray_head group must hold exactly one host, it holds 2 (gpu01, gpu03)"]),
        (_no_frontend, ["frontend: the frontend group is empty"]),
        (_head_also_worker, ["gpu01: the host is in both ray_head and ray_workers"]),
        (_same_machine_twice, ["web01: ansible_host 10.0.0.11 is also gpu01's"]),
        (_no_node_ip, ["gpu02: r1deploy_node_ip is not set"]),
        (_bad_node_ip, ["web01: r1deploy_node_ip '10.0.0.300' is not an IP address"]),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else "",
)
def test_inventory_shape_mistakes(tmp_path: Path, edit: Any, needles: list[str]) -> None:
    refused(boilerplate(inventory(tmp_path, hosts_edit=edit)), *needles)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (
            {"r1deploy_ignore_preflight_errors": "false"},
            ["r1deploy_ignore_preflight_errors must be a boolean, got the string 'false'", "without quotes"],
        ),
        ({"r1deploy_gpus_per_node": "4"}, ["r1deploy_gpus_per_node must be an integer, got the string '4'"]),
        (
            {"r1deploy_gpus_per_nod": 4},
            ["unknown variable r1deploy_gpus_per_nod", "did you mean r1deploy_gpus_per_node?"],
        ),
        ({"vllm_server_max_num_seq": 64}, ["did you mean vllm_server_max_num_seqs?"]),
        (
            {"vllm_server_tensor_parallel_size": 3},
            ["gpu_nodes (gpu01, gpu02): DeepSeek-R1-Distill-Qwen-32B: the 40 attention heads"],
        ),
        (
            {
                "r1deploy_model": "DeepSeek-R1-Distill-Llama-70B",
                "vllm_server_pipeline_parallel_size": 1,
                "vllm_server_tensor_parallel_size": 4,
            },
            ["GiB is usable", "[vllm_server_tensor_parallel_size"],
        ),
        (
            {"r1deploy_model": "deepseek-r2"},
            ["unknown model 'deepseek-r2'; known models:", "[r1deploy_model]"],
        ),
        (
            {"r1deploy_gpu_model": "v100-sxm9"},
            ["unknown GPU 'v100-sxm9'; known GPUs:", "[r1deploy_gpu_model]"],
        ),
        ({"r1deploy_model": "DeepSeek-R1"}, ["cannot be served on Tesla V100-SXM2-32GB"]),
        (
            {"vllm_server_max_model_len": 262144},
            ["greater than DeepSeek-R1-Distill-Qwen-32B's maximum context 131072"],
        ),
        ({"nvidia_driver_flavour": "open"}, ["nvidia_driver_flavour is open, but compute capability 7.0"]),
        ({"r1deploy_gpus_per_node": 2}, ["= 8 GPUs, but the cluster has 2 node(s) x 2 = 4"]),
    ],
    ids=[
        "string-bool",
        "string-int",
        "misspelled-global",
        "misspelled-role-var",
        "tp-heads",
        "weights-too-big",
        "unknown-model",
        "unknown-gpu",
        "full-r1-on-v100",
        "context-too-long",
        "open-modules",
        "too-few-gpus",
    ],
)
def test_variable_mistakes(tmp_path: Path, extra: dict[str, Any], needles: list[str]) -> None:
    refused(boilerplate(inventory(tmp_path, extra=extra)), *needles)


def test_host_override_of_a_cluster_setting_is_refused(tmp_path: Path) -> None:
    inv = inventory(tmp_path, host_vars={"gpu02": {"r1deploy_gpus_per_node": 8}})
    refused(boilerplate(inv), "r1deploy_gpus_per_node differs between GPU nodes (gpu01=4, gpu02=8)")


def test_tp_across_nodes_is_refused_unless_the_escape_hatch_is_set(tmp_path: Path) -> None:
    layout = {"vllm_server_tensor_parallel_size": 8, "vllm_server_pipeline_parallel_size": 1}
    refused(boilerplate(inventory(tmp_path / "a", extra=layout)), "TP 8 spans nodes")
    r = boilerplate(inventory(tmp_path / "b", extra={**layout, "r1deploy_ignore_preflight_errors": True}))
    assert r.returncode == 0, r.stdout[-3000:]
    assert "TP 8 spans nodes" in r.stdout  # still shown, as a warning


def test_escape_hatch_does_not_relax_errors(tmp_path: Path) -> None:
    extra = {"vllm_server_dtype": "bfloat16", "r1deploy_ignore_preflight_errors": True}
    refused(boilerplate(inventory(tmp_path, extra=extra)), "--dtype half")
