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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.deployed import LAB_VENV

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"

# The bench comparison's settings, the same for both clients.
BENCH = {"concurrency": 4, "requests": 32, "prompt_tokens": 128, "max_tokens": 64}
ROUNDS = 3  # runs of both clients side by side
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
    """The lab's one no-op re-run of deploy.yml: idempotence (changed=0 everywhere) and the CLI's record."""
    started = time.monotonic()
    code, doc, err = r1(state_dir, "deploy", "-i", str(deployed_lab.inventory))
    deployed_lab.record("noop_rerun_seconds", round(time.monotonic() - started, 1))
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
    # The serving numbers from vLLM's /metrics, and the rate from the lab's Prometheus (monitoring.yml).
    serving = vllm["serving"]
    assert serving["metrics"] and serving["running"] >= 0 and serving["waiting"] >= 0, serving
    assert 0 <= serving["kv_cache_usage_pct"] <= 100 and serving["tokens_per_s_1m"] is not None, serving
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
    # The same pointers as the deploy's closing block (test_newcomer.py reads that one): a lab
    # inventory; neither its admin password nor the API key is ever shown, only where they are.
    pointers = doc["pointers"]
    assert pointers["chat_url"] == doc["chat_url"] and pointers["lab"] == inventory_dir(deployed_lab).name
    assert pointers["admin_email"] == "admin@r1deploy.lab"
    password_file = Path(pointers["admin_password_file"])
    assert password_file.read_text().strip() not in json.dumps(doc)
    assert pointers["api_key_file"] == str(inventory_dir(deployed_lab) / "credentials" / "vllm_api_key")
    assert deployed_lab.api_key not in json.dumps(doc)
    name = inventory_dir(deployed_lab).name
    down = "make lab-down" if name == "lab" else f"r1deploy lab down --name {name}"
    assert pointers["next"] == [
        f"r1deploy smoke -i inventories/{name}",
        f"r1deploy bench -i inventories/{name}",
        down,
    ]


def test_status_sees_a_stopped_worker_and_recovers(
    deployed_lab: Any, state_dir: Path, lab_ansible: Any
) -> None:
    worker = next(iter(deployed_lab.groups["ray_workers"]))
    stop = lab_ansible(worker, "-m", "ansible.builtin.systemd_service", "-a", "name=ray-worker state=stopped")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    try:
        code, doc, _ = r1(state_dir, "status", "-i", str(deployed_lab.inventory))
        assert code == 1 and not doc["ok"]
        # Ray's worker exits non-zero on SIGTERM, so systemd may call it "failed" rather than "inactive".
        assert any(
            p.startswith(f"{worker}: ray-worker.service is ") and ("inactive" in p or "failed" in p)
            for p in doc["problems"]
        ), doc["problems"]
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

# Runs on the head with the serving venv's python: vLLM's benchmark module (`vllm.benchmarks.serve`,
# what `vllm bench serve` runs) and r1deploy.bench (stdlib only, copied
# next to this script) take turns in one process, with the same settings and the same kind of prompts
# (r1deploy's, sized to the same token count), against the same server. One process and short alternating
# rounds make both clients see the same machine: other work on a shared 2-core host comes in bursts
# that would otherwise decide the comparison. The API key is read from the head's root-only env file
# into this process's environment (vLLM's client reads OPENAI_API_KEY), never put on a command line.
AB_DRIVER = r"""
import asyncio, base64, builtins, json, os, random, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as r1bench
import vllm.benchmarks.serve as vllm_serve
from vllm.benchmarks.datasets import SampleRequest
from vllm.benchmarks.serve import add_cli_args
from vllm.tokenizers import get_tokenizer
from vllm.utils.argparse_utils import FlexibleArgumentParser

url, model, model_dir = sys.argv[1], sys.argv[2], sys.argv[3]
concurrency, requests, prompt_tokens, max_tokens, rounds = map(int, sys.argv[4:9])
tokenizer = get_tokenizer(model_dir)
with open("/etc/r1deploy/vllm-secrets.env") as handle:
    key = next(l.split("=", 1)[1].strip() for l in handle if l.startswith("VLLM_API_KEY="))
os.environ["OPENAI_API_KEY"] = key
config = r1bench.BenchConfig(url=url + "/v1", model=model, api_key=key, concurrency=concurrency,
                             requests=requests, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                             ignore_eos=True)

# Both clients send the same kind of prompts (prompt content changes this server's prefill time), each
# exactly prompt_tokens long as the server counts them (r1bench.sized_prompts, vLLM's /tokenize), and
# every run gets prompts never sent before (a repeated prompt would be served by the prefix cache).
rng = random.Random(int.from_bytes(os.urandom(4), "big"))
async def fresh_prompts():
    endpoint = r1bench.parse_url(config.url)
    conn = r1bench.Connection(endpoint, None)
    try:
        return (await r1bench.sized_prompts(conn, endpoint, config, requests, rng))[0]
    finally:
        await conn.close()

def vllm_args():
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return parser.parse_args([
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions", "--base-url", url,
        "--model", model, "--tokenizer", model_dir, "--dataset-name", "custom",
        "--dataset-path", "unused.jsonl", "--skip-chat-template", "--custom-output-len", str(max_tokens),
        "--num-prompts", str(requests), "--max-concurrency", str(concurrency), "--request-rate", "inf",
        "--ignore-eos", "--disable-tqdm", "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99",
    ])

async def together():
    # vLLM's client and ours run at the same time in one event loop, so both measure the same server
    # under the same load: a shared machine's bursts of other work then hit both alike. Ours starts
    # when vLLM's prints "Starting main benchmark run..." (after its ready check), and both send the
    # same number of requests at the same concurrency, so they also end together.
    started = asyncio.Event()
    def hooked_print(*args, **kwargs):
        if args and str(args[0]).startswith("Starting main benchmark run"):
            started.set()
        builtins.print(*args, **kwargs)
    vllm_serve.print = hooked_print
    # vLLM's `custom` dataset reads JSON Lines with pandas, which the serving venv does not have: the
    # samples are handed over as get_samples returns them.
    samples = [
        SampleRequest(prompt=p, prompt_len=len(tokenizer(p, add_special_tokens=False).input_ids),
                      expected_output_len=max_tokens)
        for p in await fresh_prompts()
    ]
    vllm_serve.get_samples = lambda args, tokenizer: samples
    ours_prompts = await fresh_prompts()
    async def ours():
        await asyncio.wait_for(started.wait(), 600)
        return await r1bench.run_bench(config, ours_prompts)
    theirs, mine = await asyncio.gather(vllm_serve.main_async(vllm_args()), ours())
    return theirs, mine.summary()

def row_vllm(r):
    row = {"output_tok_s": r["output_throughput"], "completed": r["completed"],
           "prompt_tokens_mean": r["total_input_tokens"] / r["completed"]}
    for ours, theirs in (("ttft", "ttft"), ("itl", "itl"), ("e2e", "e2el"), ("tpot", "tpot")):
        row[f"{ours}_mean_ms"] = r[f"mean_{theirs}_ms"]
        for q in (50, 90, 99):
            row[f"{ours}_p{q}_ms"] = r[f"p{q}_{theirs}_ms"]
    return row

def row_ours(s):
    row = {"output_tok_s": s["output_throughput_tok_s"], "completed": s["completed"],
           "prompt_tokens_mean": s["prompt_tokens_mean"]}
    for ours, key in (("ttft", "ttft_ms"), ("itl", "itl_ms"), ("e2e", "e2e_latency_ms"), ("tpot", "tpot_ms")):
        row[f"{ours}_mean_ms"] = s[key]["mean"]
        for q in (50, 90, 99):
            row[f"{ours}_p{q}_ms"] = s[key][f"p{q}"]
    return row

theirs, ours = [], []
for _ in range(rounds):
    v, o = asyncio.run(together())
    theirs.append(row_vllm(v))
    ours.append(row_ours(o))
print("R1DEPLOY_RESULT " + base64.b64encode(json.dumps({"vllm": theirs, "r1deploy": ours}).encode()).decode())
"""


def test_bench_cli_against_the_lab(deployed_lab: Any, state_dir: Path) -> None:
    """`make bench`: URL, model and key from the inventory; streaming, exact output lengths, a plot."""
    ARTIFACTS.mkdir(exist_ok=True)
    plot = ARTIFACTS / "bench-lab.png"
    argv = ["bench", "--inventory", str(deployed_lab.inventory), "-c", "4", "-n", "16"]
    argv += ["--prompt-tokens", "128", "--max-tokens", "32", "--ignore-eos", "--plot", str(plot)]
    code, doc, err = r1(state_dir, *argv)
    assert code == 0 and doc["ok"], err[-2000:]
    assert doc["completed"] == 16 and doc["errors"] == 0
    assert doc["output_tokens"] == 16 * 32  # ignore_eos: every request streams exactly max tokens
    # Every prompt is exactly the asked size, as the served model's tokenizer counts it (/tokenize).
    assert doc["prompt_tokens_min"] == doc["prompt_tokens_max"] == 128
    assert doc["calibration"]["method"] == "tokenize"
    assert doc["config"]["url"].endswith(":8000/v1") and doc["config"]["model"] == "r1-tiny"
    assert doc["itl_ms"]["n"] > 16 and doc["ttft_ms"]["p50"] <= doc["e2e_latency_ms"]["p50"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    key = (inventory_dir(deployed_lab) / "credentials" / "vllm_api_key").read_text().strip()
    assert key not in json.dumps(doc) + err


def test_bench_agrees_with_vllm_bench_serve(deployed_lab: Any, lab_ansible: Any, tmp_path: Path) -> None:
    head, head_ip = next(iter(deployed_lab.groups["ray_head"].items()))
    (tmp_path / "ab.py").write_text(AB_DRIVER)
    folder = lab_ansible(
        head, "-m", "ansible.builtin.file", "-a", "path=/tmp/r1deploy-bench state=directory mode=0700"
    )
    assert folder.returncode == 0, folder.stdout + folder.stderr
    for src, dest in ((REPO / "src" / "r1deploy" / "bench.py", "bench.py"), (tmp_path / "ab.py", "ab.py")):
        copy = lab_ansible(
            head, "-m", "ansible.builtin.copy", "-a", f"src={src} dest=/tmp/r1deploy-bench/{dest} mode=0600"
        )
        assert copy.returncode == 0, copy.stdout + copy.stderr
    command = (
        "cd /tmp/r1deploy-bench && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 "
        f"DO_NOT_TRACK=1 {LAB_VENV}/bin/python ab.py http://{head_ip}:8000 r1-tiny "
        f"/srv/models/r1-tiny {BENCH['concurrency']} {BENCH['requests']} {BENCH['prompt_tokens']} "
        f"{BENCH['max_tokens']} {ROUNDS}"
    )
    proc = lab_ansible(head, "-m", "ansible.builtin.shell", "-a", command, "-o", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    match = re.search(r"R1DEPLOY_RESULT ([A-Za-z0-9+/=]+)", proc.stdout)
    assert match, proc.stdout[-3000:]
    rounds = json.loads(base64.b64decode(match.group(1)))
    ours, theirs = rounds["r1deploy"], rounds["vllm"]
    assert all(r["completed"] == BENCH["requests"] for r in ours + theirs)

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    comparison = {
        key: {
            "r1deploy": round(median(ours, key), 3),
            "vllm": round(median(theirs, key), 3),
            "diff": round(median(ours, key) / median(theirs, key) - 1, 4),
        }
        for key in ours[0]
        if key != "completed"
    }
    report = {"settings": {**BENCH, "rounds": ROUNDS}, "rounds": rounds, "comparison": comparison}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "bench-vs-vllm.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(comparison, indent=1))
    # Compared: throughput, TTFT/ITL/E2E at p50, ITL/E2E at p90. Reported only: TTFT tails and means
    # and TPOT. Side by side, each client's requests go out in waves of four, and where one client's
    # wave meets the other's prefill decides some TTFTs: measured, that phase moved TTFT p90 by 8-16 %
    # either way while the request-level logic agrees (same prompt, back to back: 11.0 vs 10.7 ms).
    asserted = ("output_tok_s", "prompt_tokens_mean", "ttft_p50_ms", "itl_p50_ms", "itl_p90_ms")
    asserted += ("e2e_p50_ms", "e2e_p90_ms")
    failed = {k: comparison[k] for k in asserted if abs(comparison[k]["diff"]) > AGREEMENT}
    assert not failed, failed
