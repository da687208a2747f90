"""The serving core in the lab: Ray cluster, model fan-out, vLLM over the OpenAI API, idempotence.

Runs against the lab deployed once per session by the `deployed_lab` fixture (deploy.yml over SSH into
systemd containers; vLLM's CPU build serving the generated R1-style model).
"""

from __future__ import annotations

import json

import pytest

from tests.lab.helpers import on_host, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.deployed]


def test_first_deploy_succeeded(deployed_lab) -> None:
    run = deployed_lab.first_run
    assert run.rc == 0, run.output[-8000:]
    assert run.total("failed") == 0 and run.total("unreachable") == 0


def test_ray_cluster_has_every_gpu_node(deployed_lab) -> None:
    head, head_ip = next(iter(deployed_lab.groups["ray_head"].items()))
    out = on_host(
        deployed_lab.inventory,
        head,
        f"sudo -u r1deploy /opt/r1deploy/venv/bin/python /opt/r1deploy/bin/r1deploy-ray-wait "
        f"--address {head_ip}:6667 --timeout 30",
    )
    cluster = json.loads(out.strip().splitlines()[-1])
    assert sorted(cluster["nodes"]) == sorted(deployed_lab.groups["gpu_nodes"].values())


def test_model_is_identical_on_every_node(deployed_lab) -> None:
    digests = {
        host: on_host(
            deployed_lab.inventory,
            host,
            "cd /srv/models/r1-tiny && sha256sum model.safetensors tokenizer.json",
        )
        for host in deployed_lab.groups["gpu_nodes"]
    }
    assert len(set(digests.values())) == 1, digests


def test_openai_client_streams_a_chat_with_the_reasoning_split(deployed_lab) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=deployed_lab.vllm_url + "/v1", api_key=deployed_lab.api_key, timeout=120)
    assert [m.id for m in client.models.list().data] == ["r1-tiny"]
    reasoning, content = "", ""
    stream = client.chat.completions.create(
        model="r1-tiny",
        messages=[{"role": "user", "content": "Hello! What can you do?"}],
        stream=True,
        temperature=0,
        max_tokens=64,
    )
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
    assert reasoning.strip() == "Reasoning: greet politely, keep it short;"
    assert content.strip() == "Hello from r1deploy! This lab model runs on vLLM."


def test_api_refuses_requests_without_the_key(deployed_lab) -> None:
    httpx = pytest.importorskip("httpx")
    response = httpx.get(deployed_lab.vllm_url + "/v1/models", timeout=30)
    assert response.status_code == 401


def test_api_key_is_not_in_process_lists_or_units(deployed_lab) -> None:
    head = next(iter(deployed_lab.groups["ray_head"]))
    processes = on_host(deployed_lab.inventory, head, "ps -eo args")
    units = on_host(
        deployed_lab.inventory, head, "cat /etc/systemd/system/vllm.service /etc/r1deploy/vllm.env"
    )
    assert deployed_lab.api_key not in processes
    assert deployed_lab.api_key not in units
    mode = on_host(deployed_lab.inventory, head, "stat -c '%a %U' /etc/r1deploy/vllm-secrets.env")
    assert mode.strip() == "600 root"


@pytest.mark.parametrize(
    ("group", "unit"),
    [("ray_head", "ray-head.service"), ("ray_workers", "ray-worker.service"), ("ray_head", "vllm.service")],
)
def test_units_pass_systemd_analyze_verify(deployed_lab, group: str, unit: str) -> None:
    host = next(iter(deployed_lab.groups[group]))
    # Unknown keys only warn (exit 0): any output at all is a finding.
    out = on_host(deployed_lab.inventory, host, f"systemd-analyze verify /etc/systemd/system/{unit} 2>&1")
    assert out.strip() == ""


def test_second_run_changes_nothing(deployed_lab) -> None:
    run = run_playbook(deployed_lab.inventory, "deploy.yml")
    assert run.rc == 0, run.output[-8000:]
    assert run.total("changed") == 0, run.changed_tasks()
    deployed_lab.record("noop_rerun_seconds", run.seconds)


def test_check_diff_on_a_deployed_lab_changes_nothing(deployed_lab) -> None:
    run = run_playbook(deployed_lab.inventory, "deploy.yml", "--check", "--diff")
    assert run.rc == 0, run.output[-8000:]
    assert run.total("failed") == 0
    assert run.total("changed") == 0, run.changed_tasks()
