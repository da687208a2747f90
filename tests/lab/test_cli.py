"""The r1deploy CLI against the deployed lab: deploy (re-run), status, smoke, bench vs vLLM's client.

Runs after the session's `deployed_lab` fixture (the whole site deployed once); nothing here deploys
from scratch. Every command runs as its own process, as an operator starts it, with a private
R1DEPLOY_STATE_DIR. Traffic goes only to the lab's container addresses.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"

# The bench comparison's settings, the same for both clients.
BENCH = {"concurrency": 4, "requests": 32, "prompt_tokens": 128, "max_tokens": 64}
AGREEMENT = 0.10


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("r1deploy-state")


def r1(state_dir: Path, *argv: str, timeout: float = 3600) -> tuple[int, dict[str, Any], str]:
    """Run ``r1deploy ARGV --json``; return the exit code, the JSON object and stderr."""
    env = dict(os.environ, R1DEPLOY_STATE_DIR=str(state_dir))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [str(BIN / "r1deploy"), *argv, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON object, got:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(lines[0]), proc.stderr


def inventory_dir(deployed_lab: Any) -> Path:
    path = Path(deployed_lab.inventory)
    return path if path.is_dir() else path.parent


def lab_hosts(deployed_lab: Any) -> set[str]:
    return {host for hosts in deployed_lab.groups.values() for host in hosts}


def test_deploy_rerun_through_the_cli_is_clean_and_recorded(deployed_lab: Any, state_dir: Path) -> None:
    code, doc, err = r1(state_dir, "deploy", "-i", str(deployed_lab.inventory))
    assert code == 0, doc.get("failures") or doc.get("errors") or err[-3000:]
    assert doc["status"] == "successful" and doc["playbooks"] == ["playbooks/site.yml"]
    assert set(doc["hosts"]) == lab_hosts(deployed_lab)
    assert doc["totals"]["failed"] == 0 and doc["totals"]["unreachable"] == 0
    changed = [f"{t['name']} -> {h}" for t in doc["tasks"] for h, s in t["hosts"].items() if s == "changed"]
    assert doc["totals"]["changed"] == 0, f"a second deploy changed: {changed}"
    assert doc["tasks_total"] > 50 and all(t["duration_s"] is not None for t in doc["tasks"])
    # The CLI's per-host counts are Ansible's own recap of the same run.
    run_dir = Path(doc["run_dir"])
    stdout = (run_dir / "stdout.txt").read_text()
    for host, counts in doc["hosts"].items():
        line = next(line for line in stdout.splitlines() if line.startswith(f"{host} ") and "ok=" in line)
        assert f"ok={counts['ok']} " in line and f"changed={counts['changed']} " in line, line
    # Replayable later.
    code, shown, _ = r1(state_dir, "runs", "show", doc["run_id"])
    assert code == 0 and shown == doc


def test_status_reports_the_running_stack(deployed_lab: Any, state_dir: Path) -> None:
    code, doc, err = r1(state_dir, "status", "-i", str(deployed_lab.inventory))
    assert code == 0, doc.get("problems") or err[-3000:]
    assert doc["ok"] and doc["problems"] == []
    assert set(doc["hosts"]) == lab_hosts(deployed_lab)
    expected_units = {
        "ray_head": {"ray-head.service", "vllm.service"},
        "ray_workers": {"ray-worker.service"},
        "frontend": {"open-webui.service", "nginx.service"},
    }
    for group, units in expected_units.items():
        for host in deployed_lab.groups[group]:
            info = doc["hosts"][host]
            assert set(info["units"]) == units
            assert all(u["active"] and u["enabled"] == "enabled" for u in info["units"].values()), info
            # CPU-only lab: no GPU, told by the preflight's fact rather than nvidia-smi.
            assert info["gpu_count"] == 0 and info["gpus"] == []
    ray = doc["cluster"]["ray"]
    assert ray["ok"] and ray["nodes_active"] == len(deployed_lab.groups["gpu_nodes"])
    assert ray["cpus_total"] > 0 and ray["gpus_total"] == 0
    vllm = doc["cluster"]["vllm"]
    assert vllm["healthy"] and vllm["model_served"] and vllm["models"] == ["r1-tiny"]
    frontend = next(iter(deployed_lab.groups["frontend"]))
    inventory = yaml.safe_load((inventory_dir(deployed_lab) / "hosts.yml").read_text())
    address = inventory["all"]["children"]["frontend"]["hosts"][frontend]["ansible_host"]
    # The nginx role's default server name is the frontend's ansible_host (unless the lab names another);
    # the frontend itself fetched <chat_url>/health through nginx.
    assert doc["chat_url"].startswith("https://")
    group_vars = "".join(p.read_text() for p in inventory_dir(deployed_lab).glob("group_vars/**/*.yml"))
    if "nginx_server_names" not in group_vars:
        assert doc["chat_url"] == f"https://{address}"
    assert doc["frontend"][frontend]["ok"]


def test_status_sees_a_stopped_worker_and_recovers(
    deployed_lab: Any, state_dir: Path, lab_ansible: Any
) -> None:
    worker = next(iter(deployed_lab.groups["ray_workers"]))
    stop = lab_ansible(worker, "-m", "ansible.builtin.systemd_service", "-a", "name=ray-worker state=stopped")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    try:
        code, doc, _ = r1(state_dir, "status", "-i", str(deployed_lab.inventory))
        assert code == 1 and not doc["ok"]
        assert any(f"{worker}: ray-worker.service is inactive" in p for p in doc["problems"]), doc["problems"]
        assert doc["hosts"][worker]["units"]["ray-worker.service"]["active"] is False
        assert doc["cluster"]["ray"]["nodes_active"] == len(deployed_lab.groups["gpu_nodes"]) - 1
        assert doc["cluster"]["vllm"]["healthy"]  # the lab's vLLM does not use Ray workers
    finally:
        start = lab_ansible(
            worker, "-m", "ansible.builtin.systemd_service", "-a", "name=ray-worker state=started"
        )
        assert start.returncode == 0, start.stdout + start.stderr
    deadline = time.monotonic() + 180
    while True:
        code, doc, _ = r1(state_dir, "status", "-i", str(deployed_lab.inventory))
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert code == 0, doc["problems"]


def test_status_with_an_unreachable_host_exits_3_and_reports_the_rest(
    deployed_lab: Any, state_dir: Path, tmp_path: Path
) -> None:
    inventory = tmp_path / "inv"
    shutil.copytree(inventory_dir(deployed_lab), inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    workers = hosts["all"]["children"]["gpu_nodes"]["children"]["ray_workers"]["hosts"]
    workers["ghost"] = {"ansible_host": "127.0.0.1", "ansible_port": 1, "r1deploy_node_ip": "127.0.0.1"}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    code, doc, _ = r1(state_dir, "status", "-i", str(inventory))
    assert code == 3
    assert doc["hosts"]["ghost"] == {"reachable": False, "gathered": False}
    assert "ghost: unreachable" in doc["problems"]
    others = lab_hosts(deployed_lab)
    assert all(doc["hosts"][h]["gathered"] for h in others)


def test_smoke_answers_directly_and_through_nginx(deployed_lab: Any, state_dir: Path) -> None:
    code, doc, err = r1(state_dir, "smoke", "-i", str(deployed_lab.inventory))
    assert code == 0, json.dumps(doc.get("probes"), indent=1) + err[-2000:]
    assert doc["ok"] and set(doc["probes"]) >= {"direct", "nginx"}
    for probe in doc["probes"].values():
        # The lab model's planted answer (r1deploy.tinymodel), split by the deepseek_r1 reasoning parser.
        assert "Hello from r1deploy!" in probe["answer"], probe
        assert "Reasoning: greet politely" in probe["reasoning"], probe
        assert 0 < probe["ttft_s"] <= probe["total_s"]
    assert doc["probes"]["nginx"]["signin_s"] > 0
    # TLS was verified against the certificate nginx serves, not switched off.
    assert doc["endpoints"]["tls_cert_fetched"] is True
    assert doc["chat_url"].startswith("https://")


# ---- bench: ours against vLLM's own client, same settings, same run -----------------------------------


VLLM_BENCH = (
    'set -e; set -a; . /etc/r1deploy/vllm-secrets.env; set +a; export OPENAI_API_KEY="$VLLM_API_KEY"; '
    "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1; "
    "rm -rf /tmp/r1deploy-bench && mkdir -p /tmp/r1deploy-bench && cd /tmp/r1deploy-bench && "
    "{venv}/bin/python -c 'import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; p = FlexibleArgumentParser(); "
    "add_cli_args(p); main(p.parse_args(sys.argv[1:]))' "
    "--backend openai-chat --endpoint /v1/chat/completions --base-url http://{ip}:{port} "
    "--model {model} --tokenizer {model_dir} --dataset-name random --random-input-len {input_len} "
    "--random-output-len {max_tokens} --num-prompts {requests} --max-concurrency {concurrency} "
    "--request-rate inf --ignore-eos --seed {seed} --disable-tqdm "
    "--percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 "
    "--save-result --result-dir /tmp/r1deploy-bench --result-filename result.json >/dev/null && "
    "base64 -w0 /tmp/r1deploy-bench/result.json"
)


def vllm_bench(lab_ansible: Any, head: str, ip: str, input_len: int, seed: int) -> dict[str, Any]:
    command = VLLM_BENCH.format(
        venv="/opt/r1deploy/venv",
        ip=ip,
        port=8000,
        model="r1-tiny",
        model_dir="/srv/models/r1-tiny",
        input_len=input_len,
        seed=seed,
        **BENCH,
    )
    proc = lab_ansible(head, "-m", "ansible.builtin.shell", "-a", command, "-o", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    match = re.search(
        r"\(stdout\) ([A-Za-z0-9+/=]+)", proc.stdout
    )  # the one-line format: base64 has no spaces
    assert match, proc.stdout[-3000:]
    return json.loads(base64.b64decode(match.group(1)))


def _ours(doc: dict[str, Any]) -> dict[str, float]:
    return {
        "output_tok_s": doc["output_throughput_tok_s"],
        "ttft_median_ms": doc["ttft_ms"]["p50"],
        "ttft_mean_ms": doc["ttft_ms"]["mean"],
        "itl_median_ms": doc["itl_ms"]["p50"],
        "tpot_mean_ms": doc["tpot_ms"]["mean"],
        "e2e_median_ms": doc["e2e_latency_ms"]["p50"],
        "e2e_mean_ms": doc["e2e_latency_ms"]["mean"],
        "prompt_tokens_mean": doc["prompt_tokens_mean"],
    }


def _vllm(result: dict[str, Any]) -> dict[str, float]:
    return {
        "output_tok_s": result["output_throughput"],
        "ttft_median_ms": result["median_ttft_ms"],
        "ttft_mean_ms": result["mean_ttft_ms"],
        "itl_median_ms": result["median_itl_ms"],
        "tpot_mean_ms": result["mean_tpot_ms"],
        "e2e_median_ms": result["median_e2el_ms"],
        "e2e_mean_ms": result["mean_e2el_ms"],
        "prompt_tokens_mean": result["total_input_tokens"] / result["completed"],
    }


def test_bench_agrees_with_vllm_bench_serve(deployed_lab: Any, state_dir: Path, lab_ansible: Any) -> None:
    head, head_ip = next(iter(deployed_lab.groups["ray_head"].items()))

    def ours_run(prompt_tokens: int, seed: int) -> dict[str, float]:
        code, doc, err = r1(
            state_dir,
            "bench",
            "--inventory",
            str(deployed_lab.inventory),
            "--concurrency",
            str(BENCH["concurrency"]),
            "--requests",
            str(BENCH["requests"]),
            "--prompt-tokens",
            str(prompt_tokens),
            "--max-tokens",
            str(BENCH["max_tokens"]),
            "--ignore-eos",
            "--seed",
            str(seed),
            "--plot",
            str(ARTIFACTS / "bench-lab.png"),
        )
        assert code == 0 and doc["errors"] == 0, err[-2000:]
        return _ours(doc)

    def vllm_run(seed: int) -> dict[str, float]:
        # --random-input-len is the user content; the server counts the chat template on top.
        result = vllm_bench(lab_ansible, head, head_ip, BENCH["prompt_tokens"], seed=seed)
        assert result["completed"] == BENCH["requests"]
        return _vllm(result)

    ARTIFACTS.mkdir(exist_ok=True)
    # Rounds alternate which client goes first, so drift on a shared machine hits both alike. Our
    # prompts are sized to the total vLLM's prompts came to, as the server counted them.
    theirs = [vllm_run(seed=0)]
    prompt_total = round(theirs[0]["prompt_tokens_mean"])
    ours = [ours_run(prompt_total, seed=0), ours_run(prompt_total, seed=1)]
    theirs.append(vllm_run(seed=1))

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    comparison = {
        key: {
            "r1deploy": round(mean(ours, key), 3),
            "vllm": round(mean(theirs, key), 3),
            "diff": round(mean(ours, key) / mean(theirs, key) - 1, 4),
        }
        for key in ours[0]
    }
    report = {
        "settings": {**BENCH, "prompt_tokens_total": prompt_total},
        "rounds": {"r1deploy": ours, "vllm": theirs},
        "comparison": comparison,
    }
    (ARTIFACTS / "bench-vs-vllm.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(comparison, indent=1))
    assert abs(comparison["prompt_tokens_mean"]["diff"]) <= AGREEMENT
    for key in (
        "output_tok_s",
        "e2e_median_ms",
        "e2e_mean_ms",
        "tpot_mean_ms",
        "itl_median_ms",
        "ttft_median_ms",
    ):
        assert abs(comparison[key]["diff"]) <= AGREEMENT, (key, comparison[key])
