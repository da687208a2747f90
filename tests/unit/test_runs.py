"""Run folders: private, unique per run, listed newest first, found by id, prefix or position."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from r1deploy import runs


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R1DEPLOY_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_default_location_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("R1DEPLOY_STATE_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert runs.runs_dir() == tmp_path / ".local" / "state" / "r1deploy" / "runs"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert runs.runs_dir() == tmp_path / "xdg" / "r1deploy" / "runs"
    monkeypatch.setenv("R1DEPLOY_STATE_DIR", str(tmp_path / "mine"))
    assert runs.runs_dir() == tmp_path / "mine" / "runs"


def test_ids_are_timestamps_unique_within_a_second(state_dir: Path) -> None:
    first = runs.new_run(now=0)
    second = runs.new_run(now=0)
    assert first.id == "19700101T000000Z"
    assert second.id == "19700101T000000Z-2"
    assert [r.id for r in runs.list_runs()] == [second.id, first.id]


def test_folders_and_files_are_private(state_dir: Path) -> None:
    run = runs.new_run()
    run.write_json(runs.SUMMARY, {"status": "successful"})
    with run.open_append(runs.EVENTS) as handle:
        handle.write("{}\n")
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(run.path.parent.stat().st_mode) == 0o700
    for name in (runs.SUMMARY, runs.EVENTS):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == 0o600


def test_find_by_id_prefix_last_and_position(state_dir: Path) -> None:
    a = runs.new_run(now=0)
    b = runs.new_run(now=3600)
    assert runs.find_run("last") == b
    assert runs.find_run("-1") == b
    assert runs.find_run("-2") == a
    assert runs.find_run("-3") is None
    assert runs.find_run(a.id) == a
    assert runs.find_run("19700101T01") == b
    assert runs.find_run("1970") is None  # ambiguous
    assert runs.find_run("nope") is None


def test_rotation_keeps_the_newest(state_dir: Path) -> None:
    made = [runs.new_run(now=i, keep=3) for i in range(5)]
    assert [r.id for r in runs.list_runs()] == [r.id for r in reversed(made[-3:])]


def test_previous_task_count_uses_the_last_successful_run_with_the_same_key(state_dir: Path) -> None:
    old = runs.new_run(now=0)
    old.write_json(runs.SUMMARY, {"plan_key": "k", "status": "successful", "tasks_total": 40})
    failed = runs.new_run(now=10)
    failed.write_json(runs.SUMMARY, {"plan_key": "k", "status": "failed", "tasks_total": 3})
    other = runs.new_run(now=20)
    other.write_json(runs.SUMMARY, {"plan_key": "other", "status": "successful", "tasks_total": 7})
    assert runs.previous_task_count("k") == 40
    assert runs.previous_task_count("missing") is None
