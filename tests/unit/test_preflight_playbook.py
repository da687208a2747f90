"""Stage 1 as users run it: the real `ansible-playbook playbooks/boilerplate.yml` against inventories
with one mistake each. Stage 1 connects to no host, so these run without the lab."""

from __future__ import annotations

import json
import os
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
    filled_in(inv)
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


def filled_in(inv: Path) -> None:
    """What a site does last: delete the sample's marker (these tests start from the sample's values)."""
    main = inv / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text().replace("r1deploy_unedited_sample: true\n", ""))


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


def test_the_unedited_sample_says_what_to_fill_in_and_contacts_nobody(tmp_path: Path) -> None:
    inv = tmp_path / "sample"
    shutil.copytree(SAMPLE, inv)
    env = dict(os.environ, R1DEPLOY_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "r1deploy"), "check", "-i", str(inv), "--json"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300, env=env,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc["status"] == "refused", proc.stdout[-3000:]
    assert doc["totals"]["unreachable"] == 0 and [p["name"] for p in doc["plays"]][1:] == []  # stage 1 only
    message = doc["failures"][0]["message"]
    for needle in ("hosts.yml", "ansible_host", "r1deploy_node_ip", "gpu01 10.0.0.11", "ansible_user",
                   "r1deploy_model", "r1deploy_gpu_model", "r1deploy_gpus_per_node", "open_webui_admin_email",
                   "delete `r1deploy_unedited_sample: true`"):  # fmt: skip
        assert needle in message, (needle, message)
    # Deleting the marker is all it takes for the sample's own values to pass stage 1.
    filled_in(inv)
    assert boilerplate(inv).returncode == 0


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


@pytest.mark.parametrize(
    ("copy", "shared"),
    [
        ("ray_head_port", "r1deploy_ray_port"),
        ("vllm_server_venv", "r1deploy_venv"),
        ("nginx_vllm_api_key", "r1deploy_vllm_api_key"),
        ("open_webui_vllm_port", "r1deploy_vllm_port"),
    ],
)
def test_a_roles_copy_of_a_shared_setting_is_refused(tmp_path: Path, copy: str, shared: str) -> None:
    """Set in the inventory, a role's copy would reach that role only (a worker dialling another GCS port,
    nginx sending another key): stage 1 names the shared setting to set instead, before any host."""
    value = 7000 if copy.endswith("port") else "/opt/elsewhere" if copy.endswith("venv") else "k" * 40
    refused(
        boilerplate(inventory(tmp_path, extra={copy: value})),
        f"{copy} is set in the inventory, but it is one role's copy of the shared {shared}",
        f"set {shared} instead (group_vars/all; roles/r1deploy) and remove {copy}",
    )


def test_the_shared_settings_themselves_are_accepted(tmp_path: Path) -> None:
    shared = {"r1deploy_ray_port": 7000, "r1deploy_venv": "/opt/other/venv", "r1deploy_service_user": "svc"}
    proc = boilerplate(inventory(tmp_path, extra=shared))
    assert proc.returncode == 0, proc.stdout[-3000:]


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


# ---- r1deploy_gpu_reboot_batch: a play keyword (serial) set in the inventory ---------------------------


def test_reboot_batch_in_group_vars_is_refused_where_serial_would_ignore_it(tmp_path: Path) -> None:
    inv = inventory(tmp_path, extra={"r1deploy_gpu_reboot_batch": 2})
    r = boilerplate(inv)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "would use 1" in out, out[-3000:]
    fix = "-e '{\"r1deploy_gpu_reboot_batch\": 2}'"
    assert fix in out and "r1deploy deploy" in out, out[-3000:]  # the fixes
    # The fix as the message gives it: the same value as a typed extra variable reaches serial.
    r = boilerplate(inv, "-e", '{"r1deploy_gpu_reboot_batch": 2}')
    assert r.returncode == 0, r.stdout[-3000:]
    assert "GPU reboot batch 2" in r.stdout


def test_reboot_batch_in_group_vars_reaches_serial_through_the_cli(tmp_path: Path) -> None:
    inv = inventory(tmp_path, extra={"r1deploy_gpu_reboot_batch": 2})
    env = dict(os.environ, R1DEPLOY_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "r1deploy"), "run", "boilerplate", "-i", str(inv), "--json"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300, env=env,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"], proc.stdout[-3000:] + proc.stderr[-2000:]
    assert doc["plays"][0]["name"].endswith("GPU reboot batch 2")
    command = json.loads((Path(doc["run_dir"]) / "command.json").read_text())
    assert command["inventory_keywords"] == {"r1deploy_gpu_reboot_batch": 2}


def test_hosts_that_disagree_on_the_reboot_batch_are_refused(tmp_path: Path) -> None:
    r = boilerplate(inventory(tmp_path, host_vars={"gpu02": {"r1deploy_gpu_reboot_batch": 2}}))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "(gpu02: 2)" in out and "one value for every gpu_nodes host" in out
