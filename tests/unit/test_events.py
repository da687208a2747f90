"""Event handling, summary and exit codes from recorded ansible-runner events.

The fixtures (tests/fixtures/runner-events/*.jsonl) are real runner events recorded by
tests/fixtures/runner-events/record.py: two local hosts and one that refuses SSH.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from r1deploy.events import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    RunState,
    build_summary,
    exit_code,
    strip_ansi,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runner-events"


def load(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line]
    meta = json.loads((FIXTURES / f"{name}.meta.json").read_text())
    return events, meta


def replay(name: str) -> tuple[RunState, dict[str, Any]]:
    events, meta = load(name)
    state = RunState()
    for event in events:
        state.feed(event)
    return state, meta


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("ok", EXIT_OK),
        ("mixed-failed", EXIT_FAILED),
        ("mixed-unreachable", EXIT_UNREACHABLE),
        ("input-refused", EXIT_BAD_INPUT),
        ("syntax-error", EXIT_BAD_INPUT),
    ],
)
def test_exit_code_per_recorded_run(scenario: str, expected: int) -> None:
    state, meta = replay(scenario)
    assert exit_code(state, meta["runner_status"], meta["rc"]) == expected


def test_interrupted_run_exits_130_whatever_happened_before() -> None:
    state, meta = replay("mixed-failed")
    assert exit_code(state, meta["runner_status"], meta["rc"], interrupted=True) == EXIT_INTERRUPTED
    # ansible-playbook's own "user interrupted" code, and runner's cancel, mean the same.
    assert exit_code(RunState(), "failed", 99) == EXIT_INTERRUPTED
    assert exit_code(RunState(), "canceled", 254) == EXIT_INTERRUPTED


def test_counts_match_ansible_recap() -> None:
    state, _ = replay("mixed-unreachable")
    hosts = {name: counts.as_dict() for name, counts in state.hosts.items()}
    assert hosts["gone"]["unreachable"] == 1
    assert hosts["node2"]["failed"] == 1
    assert hosts["node1"]["failed"] == 0
    # The recorded playbook_on_stats is the source of truth for the recap.
    stats_event = next(e for e in load("mixed-unreachable")[0] if e["event"] == "playbook_on_stats")
    data = stats_event["event_data"]
    for host, counts in hosts.items():
        assert counts["ok"] == data["ok"].get(host, 0)
        assert counts["changed"] == data["changed"].get(host, 0)
        assert counts["skipped"] == data["skipped"].get(host, 0)
        assert counts["rescued"] == data["rescued"].get(host, 0)
        assert counts["ignored"] == data["ignored"].get(host, 0)


def test_live_counts_before_stats_track_results() -> None:
    """While the run is going (no stats yet), the view's counts come from the results seen so far."""
    events, _ = load("mixed-failed")
    state = RunState()
    for event in events:
        if event["event"] == "playbook_on_stats":
            break
        state.feed(event)
    assert state.stats is None
    node1, node2 = state.hosts["node1"], state.hosts["node2"]
    assert (node1.changed, node1.skipped, node1.ignored) == (2, 2, 1)
    # A failure is shown as it happens; only the final stats know a block rescued it.
    assert node2.failed == 2
    assert node1.failed == 1


def test_failures_are_reported_in_full_and_rescued_or_ignored_ones_do_not_count() -> None:
    state, _ = replay("mixed-failed")
    final = state.final_failures()
    assert len(final) == 1
    failure = final[0]
    assert failure.host == "node2"
    assert failure.task == "Loop with a failing item on node2"
    assert "item 2" in failure.message
    assert failure.stderr_tail == ["first stderr line", "item 2 says no"]
    assert failure.path.endswith("playbooks/mixed.yml:37")
    # The rescued failures are kept apart; the ignore_errors one is not a failure at all.
    rescued = state.rescued_failures()
    assert {f.task for f in rescued} == {"Fails, then rescued"}
    assert all(f.task != "Ignored failure" for f in state.failures)


def test_feed_returns_the_failure_the_moment_it_happens() -> None:
    events, _ = load("mixed-unreachable")
    state = RunState()
    seen = [f for f in (state.feed(e) for e in events) if f is not None]
    assert [f.host for f in seen if f.unreachable] == ["gone"]
    assert "Connection refused" in seen[0].message
    assert seen[0].task == "Ok task"


def test_task_numbers_names_and_durations() -> None:
    state, _ = replay("mixed-failed")
    names = [t.name for t in state.tasks]
    assert names[:3] == ["Ok task", "Changed task", "Skipped on node1"]
    assert [t.number for t in state.tasks] == list(range(1, len(names) + 1))
    for task in state.tasks:
        assert task.duration_s is not None and task.duration_s >= 0
        # Per host durations come from the runner's start/end of each result.
        for seconds in task.host_durations.values():
            assert 0 <= seconds <= task.duration_s + 1
    changed = next(t for t in state.tasks if t.name == "Changed task")
    assert changed.hosts == {"node1": "changed", "node2": "changed"}


def test_syntax_error_is_explained() -> None:
    state, _ = replay("syntax-error")
    assert state.tasks == []
    assert any("YAML parsing failed" in e for e in state.errors)


def test_summary_is_json_and_complete() -> None:
    state, meta = replay("mixed-unreachable")
    code = exit_code(state, meta["runner_status"], meta["rc"])
    summary = build_summary(
        state,
        meta={"run_id": "X", "command": "run"},
        runner_status=meta["runner_status"],
        rc=meta["rc"],
        code=code,
        started="s",
        finished="f",
        duration_s=1.5,
    )
    again = json.loads(json.dumps(summary))
    assert again["exit_code"] == EXIT_UNREACHABLE
    assert again["ok"] is False
    assert again["status"] == "unreachable"
    assert set(again["hosts"]) == {"node1", "node2", "gone"}
    assert again["totals"]["unreachable"] == 1
    assert {f["host"] for f in again["failures"]} == {"gone", "node2"}
    assert again["tasks_total"] == len(again["tasks"]) > 5
    assert all(t["duration_s"] is not None for t in again["tasks"])
    assert again["slowest_tasks"][0]["duration_s"] >= again["slowest_tasks"][-1]["duration_s"]


def test_no_log_results_stay_censored() -> None:
    events, _ = load("ok")
    secret = (FIXTURES / "project" / "credentials" / "vllm_api_key").read_text().strip()
    assert secret not in json.dumps(events)
    task = next(e for e in events if e["event"] == "runner_on_ok" and "no_log" in e["event_data"]["task"])
    assert "censored" in task["event_data"]["res"]


def test_list_messages_become_lines() -> None:
    from r1deploy.events import _message

    assert _message({"msg": ["found 2 problems:", "TP 3 does not divide 8 heads"]}) == (
        "found 2 problems:\nTP 3 does not divide 8 heads"
    )


def test_strip_ansi() -> None:
    assert strip_ansi("\x1b[0;31mfatal\x1b[0m\r\nnext") == "fatal\nnext"
