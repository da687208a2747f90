"""`r1deploy status`: parsing what playbooks/status.yml gathers, and the playbook/parser contract."""

from __future__ import annotations

from pathlib import Path

import yaml

from r1deploy.gpufacts import QUERY_FIELDS, QUERY_FIELDS_OLD
from r1deploy.status import parse_gpus, parse_ray_status, parse_units

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


RAY_V2 = """======== Autoscaler status: 2026-11-29 19:45:02.123456 ========
Node status
---------------------------------------------------------------
Active:
 (no active nodes)
Idle:
 1 node_6e0e1f53e5e1f7f1d4e6a3c8c7a2b1b0e9f8d7c6b5a4f3e2d1c0b9a8
 1 node_0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1
Pending:
 (no pending nodes)
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 0.0/4.0 CPU
 0.0/16.0 GPU
 0B/6.52GiB memory
 0B/2.79GiB object_store_memory

Total Constraints:
 (no request_resources() constraints)
Total Demands:
 (no resource demands)
"""


def test_ray_status_counts_idle_and_active_nodes() -> None:
    assert parse_ray_status(RAY_V2) == {
        "nodes_active": 2,
        "nodes_pending": 0,
        "gpus_total": 16.0,
        "gpus_used": 0.0,
        "cpus_total": 4.0,
    }
    legacy = RAY_V2.replace("Active:\n (no active nodes)\nIdle:\n", "Active:\n").replace(
        "Pending:\n (no pending nodes)", "Pending:\n 10.0.0.13: worker, launching"
    )
    parsed = parse_ray_status(legacy)
    assert parsed["nodes_active"] == 2 and parsed["nodes_pending"] == 1
