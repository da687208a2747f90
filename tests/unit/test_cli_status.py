"""`r1deploy status`: parsing what playbooks/status.yml gathers, and the playbook/parser contract."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
import yaml

from r1deploy.gpufacts import QUERY_FIELDS, QUERY_FIELDS_OLD
from r1deploy.status import parse_gpus, parse_ray_status, parse_serving, parse_units

REPO = Path(__file__).resolve().parents[2]
SMI = REPO / "tests" / "fixtures" / "nvidia-smi"
STATUS_YML = REPO / "playbooks" / "status.yml"


def _query_fields(task_name: str) -> tuple[str, ...]:
    plays = yaml.safe_load(STATUS_YML.read_text())
    for play in plays:
        for task in play.get("tasks", []):
            if task["name"] == task_name:
                argv = task["ansible.builtin.command"]["argv"]
                query = next(a for a in argv if a.startswith("--query-gpu="))
                return tuple(query.removeprefix("--query-gpu=").split(","))
    raise AssertionError(task_name)


def test_playbook_queries_the_fields_the_gpu_fact_parser_expects() -> None:
    assert _query_fields("Query GPUs (nvidia-smi)") == QUERY_FIELDS
    assert _query_fields("Query GPUs without compute_cap (drivers before R510)") == QUERY_FIELDS_OLD


def test_gpus_from_recorded_nvidia_smi() -> None:
    gpus = parse_gpus((SMI / "v100-sxm2-32gb-x8.csv").read_text())
    assert len(gpus) == 8
    assert gpus[0] == {
        "index": 0,
        "name": "Tesla V100-SXM2-32GB",
        "compute_capability": "7.0",
        "memory_mib": 32768,
        "driver": "580.173.02",
        "persistence_mode": True,
    }
    old = parse_gpus((SMI / "v100-sxm2-32gb-x4-r470-no-compute-cap.csv").read_text(), "old")
    assert len(old) == 4 and old[0]["compute_capability"] == "7.0"  # from the board name
    assert parse_gpus((SMI / "driver-not-loaded.txt").read_text()) == []


def test_units_from_systemctl_show() -> None:
    text = (
        "Id=ray-head.service\nLoadState=loaded\nActiveState=active\nSubState=running\n"
        "UnitFileState=enabled\nActiveEnterTimestamp=Sun 2026-11-29 19:40:01 UTC\nNRestarts=0\n\n"
        "Id=vllm.service\nLoadState=loaded\nActiveState=activating\nSubState=auto-restart\n"
        "UnitFileState=enabled\nActiveEnterTimestamp=\nNRestarts=3\n\n"
        "Id=open-webui.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"
        "UnitFileState=\nActiveEnterTimestamp=\nNRestarts=0\n"
    )
    units = parse_units(text)
    assert units["ray-head.service"]["active"] and units["ray-head.service"]["enabled"] == "enabled"
    assert units["vllm.service"] == {
        "active": False,
        "state": "activating/auto-restart",
        "enabled": "enabled",
        "loaded": True,
        "since": None,
        "restarts": 3,
    }
    assert units["open-webui.service"]["loaded"] is False


# `ray status` of Ray 2.60 on a two-node CPU lab cluster, recorded by the status playbook.
RAY_LAB = (REPO / "tests" / "fixtures" / "runner-events" / "ray-status-2.60-lab.txt").read_text()


def test_ray_status_from_a_recorded_cluster() -> None:
    assert parse_ray_status(RAY_LAB) == {
        "nodes_active": 2,
        "nodes_pending": 0,
        "gpus_total": 0.0,
        "gpus_used": 0.0,
        "cpus_total": 4.0,
    }


def test_ray_status_with_gpus_idle_nodes_and_pending_ones() -> None:
    # The same report for a GPU cluster: Ray adds a GPU line; the v2 formatter lists idle nodes apart.
    text = RAY_LAB.replace(" 0.0/4.0 CPU\n", " 2.0/4.0 CPU\n 8.0/16.0 GPU\n")
    text = text.replace("Active:\n", "Active:\n (no active nodes)\nIdle:\n")
    text = text.replace(" (no pending nodes)", " 10.0.0.13: worker, launching")
    assert parse_ray_status(text) == {
        "nodes_active": 2,
        "nodes_pending": 1,
        "gpus_total": 16.0,
        "gpus_used": 8.0,
        "cpus_total": 4.0,
    }


# ---- the whole status document from a recorded status run --------------------------------------------

STATUS_RUN = REPO / "tests" / "fixtures" / "runner-events" / "status-lab"


def _status(events: list[dict], runner_status: str = "successful", rc: int = 0) -> dict:
    from r1deploy.events import RunState, build_summary, exit_code
    from r1deploy.runner import RunResult
    from r1deploy.status import build_status

    state = RunState()
    for event in events:
        state.feed(event)
    code = exit_code(state, runner_status, rc)
    summary = build_summary(
        state,
        meta={"run_id": "R"},
        runner_status=runner_status,
        rc=rc,
        code=code,
        started="",
        finished="",
        duration_s=0,
    )
    return build_status(RunResult(code, summary, state, None), events)


def _recorded() -> list[dict]:
    import json

    return [json.loads(line) for line in STATUS_RUN.with_suffix(".jsonl").read_text().splitlines() if line]


def test_status_of_the_recorded_healthy_lab() -> None:
    doc = _status(_recorded())
    assert doc["ok"] and doc["exit_code"] == 0 and doc["problems"] == []
    assert set(doc["hosts"]) == {"lab-cli-head", "lab-cli-worker1", "lab-cli-frontend"}
    assert set(doc["hosts"]["lab-cli-head"]["units"]) == {"ray-head.service", "vllm.service"}
    assert doc["hosts"]["lab-cli-head"]["units"]["vllm.service"]["restarts"] == 8
    assert doc["hosts"]["lab-cli-head"]["gpu_source"] == "none"  # CPU lab: the preflight's fact says so
    assert doc["cluster"]["ray"]["nodes_active"] == 2
    assert doc["cluster"]["vllm"] == {
        "url": "http://172.25.0.2:8000/v1",
        "healthy": True,
        "health_error": "",
        "models": ["r1-tiny"],
        "served_model": "r1-tiny",
        "model_served": True,
        "max_model_len": 2048,
        # Recorded before the status playbook read /metrics: no numbers, and none made up.
        "serving": {
            "metrics": False,
            "running": None,
            "waiting": None,
            "kv_cache_usage_pct": None,
            "generation_tokens_total": None,
            "tokens_per_s_1m": None,
        },
    }
    assert doc["chat_url"] == "https://172.26.0.2" and doc["frontend"]["lab-cli-frontend"]["ok"]


def test_status_names_what_is_down() -> None:
    import json

    text = "\n".join(json.dumps(e) for e in _recorded())
    # The same run, had the worker's Ray unit been stopped and the head serving another model.
    text = text.replace(
        "Id=ray-worker.service\\nLoadState=loaded\\nActiveState=active\\nSubState=running",
        "Id=ray-worker.service\\nLoadState=loaded\\nActiveState=inactive\\nSubState=dead",
    )
    text = text.replace('"models": ["r1-tiny"]', '"models": ["other-model"]')
    doc = _status([json.loads(line) for line in text.splitlines()])
    assert doc["exit_code"] == 1 and not doc["ok"]
    assert "lab-cli-worker1: ray-worker.service is inactive/dead" in doc["problems"]
    assert "vllm: model 'r1-tiny' not served (server lists ['other-model'])" in doc["problems"]


# vLLM's /metrics lines as the status playbook keeps them (one engine; the names of vLLM >= 0.11).
METRIC_LINES = [
    'vllm:num_requests_running{engine="0",model_name="r1-tiny"} 3.0',
    'vllm:num_requests_waiting{engine="0",model_name="r1-tiny"} 7.0',
    'vllm:kv_cache_usage_perc{engine="0",model_name="r1-tiny"} 0.4567',
    'vllm:generation_tokens_total{engine="0",model_name="r1-tiny"} 12345.0',
]


def test_serving_numbers_from_vllm_metrics_and_the_prometheus_rate() -> None:
    rate = {"status": 200, "result": [{"metric": {}, "value": [1765000000.0, "41.25"]}]}
    serving = parse_serving(METRIC_LINES, rate)
    assert serving == {
        "metrics": True,
        "running": 3,
        "waiting": 7,
        "kv_cache_usage_pct": 45.7,
        "generation_tokens_total": 12345,
        "tokens_per_s_1m": 41.25,
    }
    # Two engines (data parallel): the cluster's numbers are their sums.
    second = [line.replace('engine="0"', 'engine="1"') for line in METRIC_LINES]
    assert parse_serving(METRIC_LINES + second, rate)["waiting"] == 14


def test_no_prometheus_no_rate_and_no_metrics_no_numbers() -> None:
    assert parse_serving(METRIC_LINES, {"status": -1, "result": []})["tokens_per_s_1m"] is None
    assert parse_serving(METRIC_LINES, None)["tokens_per_s_1m"] is None
    assert parse_serving(METRIC_LINES, {"status": 200, "result": []})["tokens_per_s_1m"] == 0.0  # idle
    empty = parse_serving([], None)
    assert not empty["metrics"] and empty["running"] is None and empty["kv_cache_usage_pct"] is None


def test_the_playbook_keeps_the_series_the_parser_reads() -> None:
    plays = yaml.safe_load(STATUS_YML.read_text())
    task = next(t for p in plays for t in p.get("tasks", []) if t["name"] == "Cluster status")
    kept = task["ansible.builtin.set_fact"]["r1deploy_status_cluster"]["metrics"]
    pattern = re.search(r"match', '([^']+)'", kept).group(1)
    assert all(re.match(pattern, line) for line in METRIC_LINES)
    assert not re.match(pattern, 'vllm:time_to_first_token_seconds_bucket{le="0.1"} 3.0')


def test_status_asks_the_prometheus_that_monitoring_yml_installs() -> None:
    """The serving rate comes from the host monitoring.yml puts Prometheus on: one pattern, kept equal."""
    monitoring = yaml.safe_load((REPO / "playbooks" / "monitoring.yml").read_text())
    installs = next(p["hosts"] for p in monitoring if "prometheus" in str(p.get("roles")))
    status = yaml.safe_load(STATUS_YML.read_text())
    asks = next(p["hosts"] for p in status if "Prometheus" in p["name"])
    assert asks == installs


@pytest.mark.parametrize(
    "groups",
    [
        {"frontend": ["web1", "web2"], "gpu_nodes": ["gpu1"]},
        {"frontend": ["web1"], "monitoring": ["mon1"], "gpu_nodes": ["gpu1"]},
        {"frontend": ["web1"], "monitoring": [], "gpu_nodes": ["gpu1"]},
    ],
    ids=["frontend", "monitoring-group", "empty-monitoring-group"],
)
def test_the_shared_monitoring_host_is_the_one_monitoring_yml_installs(groups: dict[str, list[str]]) -> None:
    """roles/r1deploy's r1deploy_monitoring_host (where nginx serves /prometheus/) names the host the
    Prometheus play's pattern selects."""
    env = jinja2.Environment()
    monitoring = yaml.safe_load((REPO / "playbooks" / "monitoring.yml").read_text())
    pattern = env.from_string(next(p["hosts"] for p in monitoring if "prometheus" in str(p.get("roles"))))
    selected = pattern.render(groups=groups).strip()
    group, _, index = selected.partition("[")
    host = groups[group][int(index.rstrip("]"))] if index else groups[group][0]
    shared = yaml.safe_load((REPO / "roles" / "r1deploy" / "defaults" / "main.yml").read_text())
    assert env.from_string(shared["r1deploy_monitoring_host"]).render(groups=groups).strip() == host
