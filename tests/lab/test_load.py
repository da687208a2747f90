"""Load through nginx: 32 concurrent streamed chats, bounded in time and count, zero errors, no leaks.

`r1deploy bench` (the project's load generator, used as it is) sends streamed chat completions through
nginx's /v1/ route (TLS, key checked by nginx, proxied unbuffered to vLLM) at a concurrency of 32.
The request count is sized so the run ends well inside two minutes on the lab, and the process is
stopped at two minutes whatever happens. Afterwards every connection is back to where it was:
clients' TLS connections to nginx are closed, nginx holds no more upstream connections to vLLM than
its keep-alive pools allow, and vLLM has no request running or waiting.

Throughput and latency percentiles go to test-artifacts/load.json (reported, never asserted).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.helpers import REPO, on_host

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"
CONCURRENCY = 32
# 3 rounds of 32. r1deploy bench sizes every prompt exactly first (~13 calls a prompt through nginx):
# 96 took 64 s in all on a quiet 2-core lab, 5.5 s of it the load itself.
REQUESTS = 96
MAX_TOKENS = 48
TIME_LIMIT_S = 120
KEEPALIVE_PER_WORKER = 32  # roles/nginx/templates/nginx.conf.j2: upstream r1deploy_vllm { keepalive 32; }


def _established(inventory: Path, host: str, ss_filter: str) -> int:
    out = on_host(inventory, host, f"ss -Htn state established '{ss_filter}' | wc -l")
    return int(out.strip())


def _vllm_queue(inventory: Path, head: str, head_ip: str) -> dict[str, float]:
    """vLLM's own gauges of requests running and waiting (its /metrics needs no key)."""
    url = f"http://{head_ip}:8000/metrics"
    fetch = f"import urllib.request as u; print(u.urlopen('{url}', timeout=30).read().decode())"
    text = on_host(inventory, head, f'python3 -c "{fetch}"')
    values: dict[str, float] = {}
    for name in ("num_requests_running", "num_requests_waiting"):
        found = re.findall(rf"^vllm:{name}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.MULTILINE)
        assert found, f"vllm:{name} missing from /metrics"
        values[name] = sum(float(v) for v in found)
    return values


def test_32_streamed_chats_through_nginx_without_errors_or_leaks(deployed_lab, tmp_path) -> None:
    inv = deployed_lab.inventory
    frontend = next(iter(deployed_lab.groups["frontend"]))
    head, head_ip = next(iter(deployed_lab.groups["ray_head"].items()))
    workers = int(on_host(inv, frontend, "pgrep -c -f 'nginx: worker process'").strip())
    client_filter = "( sport = :443 )"
    upstream_filter = f"( dst {head_ip}:8000 )"
    baseline = {
        "nginx_client_connections": _established(inv, frontend, client_filter),
        "nginx_upstream_connections": _established(inv, frontend, upstream_filter),
        **_vllm_queue(inv, head, head_ip),
    }

    env = dict(os.environ, R1DEPLOY_STATE_DIR=str(tmp_path / "state"))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    argv = [str(BIN / "r1deploy"), "bench", "--inventory", str(inv), "--via", "nginx"]
    argv += ["-c", str(CONCURRENCY), "-n", str(REQUESTS), "--endpoint", "chat", "--prompt-tokens", "64"]
    argv += ["--max-tokens", str(MAX_TOKENS), "--ignore-eos", "--timeout", str(TIME_LIMIT_S), "--json"]
    started = time.monotonic()
    proc = subprocess.run(  # the prompts are sized before the clock starts: allow for that too
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=3 * TIME_LIMIT_S, check=False
    )
    wall = round(time.monotonic() - started, 1)
    doc = json.loads(proc.stdout.strip().splitlines()[-1])

    after: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while True:  # closing sockets take a moment to leave ESTABLISHED
        after = {
            "nginx_client_connections": _established(inv, frontend, client_filter),
            "nginx_upstream_connections": _established(inv, frontend, upstream_filter),
            **_vllm_queue(inv, head, head_ip),
        }
        settled = after["nginx_client_connections"] <= baseline["nginx_client_connections"]
        if settled or time.monotonic() > deadline:
            break
        time.sleep(2)

    figures = {
        "concurrency": CONCURRENCY,
        "requests": doc["requests"],
        "completed": doc["completed"],
        "errors": doc["errors"],
        "error_kinds": doc["error_kinds"],
        "wall_s": wall,
        "duration_s": doc["duration_s"],
        "request_throughput_rps": doc["request_throughput_rps"],
        "output_throughput_tok_s": doc["output_throughput_tok_s"],
        "output_tokens": doc["output_tokens"],
        **{
            f"{key}_{q}": doc[key][q]
            for key in ("ttft_ms", "itl_ms", "e2e_latency_ms")
            for q in ("p50", "p90", "p99")
        },
        "baseline": baseline,
        "after": after,
        "nginx_workers": workers,
        "url": doc["config"]["url"],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nload through nginx: {json.dumps(figures)}")

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert doc["config"]["url"].startswith("https://") and "/v1" in doc["config"]["url"]
    assert doc["completed"] == REQUESTS and doc["errors"] == 0, doc["error_kinds"]
    assert doc["output_tokens"] == REQUESTS * MAX_TOKENS  # every stream ran to its end
    assert after["nginx_client_connections"] <= baseline["nginx_client_connections"], (baseline, after)
    assert after["nginx_upstream_connections"] <= max(
        baseline["nginx_upstream_connections"], KEEPALIVE_PER_WORKER * workers
    ), (baseline, after)
    assert after["num_requests_running"] == 0 and after["num_requests_waiting"] == 0, after
