"""The CLI end to end on real ansible-playbook runs (local connection, loopback only): JSON, exit codes,
plain output, run folders, the deploy/check/teardown playbook mapping and Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1deploy import cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runner-events" / "project"
INVENTORY = FIXTURES / "inventory.yml"
PLAYBOOKS = FIXTURES / "playbooks"


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R1DEPLOY_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out  # exactly one machine-readable object
    return code, json.loads(lines[0])


def test_every_issue_command_is_registered() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"deploy", "run", "check", "status", "smoke", "bench", "teardown", "runs"} <= set(sub.choices)


@pytest.mark.parametrize(
    ("args", "expected_code", "expected_status"),
    [
        ([], 3, "unreachable"),
        (["--limit", "node1,node2"], 1, "failed"),
        (["--limit", "node1"], 0, "successful"),
    ],
)
def test_json_and_exit_codes(
    capsys: pytest.CaptureFixture[str], args: list[str], expected_code: int, expected_status: str
) -> None:
    code, doc = run_json(capsys, "run", str(PLAYBOOKS / "mixed.yml"), "-i", str(INVENTORY), *args)
    assert code == expected_code == doc["exit_code"]
    assert doc["status"] == expected_status
    assert doc["ok"] is (expected_code == 0)
    assert doc["schema"] == "r1deploy.run/1"
    assert Path(doc["run_dir"], "summary.json").is_file()
    assert json.loads(Path(doc["run_dir"], "summary.json").read_text()) == doc


def test_refused_input_check_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "run", str(PLAYBOOKS / "boilerplate.yml"), "-i", str(INVENTORY))
    assert code == 2
    assert "refused plan" in doc["failures"][0]["message"]


def test_syntax_error_exits_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "run", str(PLAYBOOKS / "syntax_error.broken"), "-i", str(INVENTORY))
    assert code == 2
    assert any("YAML" in e for e in doc["errors"])


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "-i", "/nonexistent/inventory"],
        ["run", "no-such-playbook", "-i", str(INVENTORY)],
        ["run", str(PLAYBOOKS / "mixed.yml"), "-i", str(INVENTORY), "-e", "vllm_server_api_key=oops"],
        ["run", str(PLAYBOOKS / "mixed.yml"), "-i", str(INVENTORY), "-e", "@/nonexistent.yml"],
        ["bench", "--url", "http://127.0.0.1:9/v1"],
        ["runs", "show", "nothing-like-this"],
    ],
)
def test_bad_input_exits_2_and_runs_nothing(
    capsys: pytest.CaptureFixture[str], state_dir: Path, argv: list[str]
) -> None:
    code, doc = run_json(capsys, *argv)
    assert code == 2
    assert doc["ok"] is False and doc["errors"]
    assert not (state_dir / "runs").exists() or not any((state_dir / "runs").iterdir())


def test_plain_output_when_not_a_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", str(PLAYBOOKS / "mixed.yml"), "-i", str(INVENTORY), "--limit", "node1,node2"])
    out = capfd.readouterr().out
    assert code == 1
    assert "\x1b[" not in out  # no terminal control codes in logs
    assert "PLAY Mixed results" in out
    assert "TASK [task 1] Ok task" in out
    assert "FAILED: node2 | Loop with a failing item on node2" in out
    assert "item 2 says no" in out  # the last stderr lines, as it happens
    assert "RECAP" in out and "node2" in out


def test_runs_lists_and_replays(capsys: pytest.CaptureFixture[str]) -> None:
    _, first = run_json(capsys, "run", str(PLAYBOOKS / "mixed.yml"), "-i", str(INVENTORY), "--limit", "node1")
    _, second = run_json(capsys, "run", str(PLAYBOOKS / "boilerplate.yml"), "-i", str(INVENTORY))
    code, listing = run_json(capsys, "runs")
    assert code == 0
    assert [r["id"] for r in listing["runs"]] == [second["run_id"], first["run_id"]]
    assert listing["runs"][0]["exit_code"] == 2
    code, shown = run_json(capsys, "runs", "show", "-2")
    assert code == 0 and shown == first
    assert cli.main(["runs", "show", "last"]) == 0
    text = capsys.readouterr().out
    assert "refused plan" in text and second["run_id"] in text
    # The command line is recorded (paths and flags only).
    command = json.loads(Path(first["run_dir"], "command.json").read_text())
    assert command["argv"][:2] == ["r1deploy", "run"]
    assert command["ansible_playbook"][0] == "ansible-playbook"
    assert "--limit" in command["ansible_playbook"]


def test_second_run_estimates_task_count_from_the_first(capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["run", str(PLAYBOOKS / "mixed.yml"), "-i", str(INVENTORY), "--limit", "node1"]
    assert cli.main(argv) == 0
    assert "of ~" not in capfd.readouterr().out
    assert cli.main(argv) == 0
    assert "TASK [task 2 of ~" in capfd.readouterr().out


@pytest.fixture
def fake_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout whose site/boilerplate/preflight/teardown playbooks just report how they were run."""
    root = tmp_path / "project"
    (root / "playbooks").mkdir(parents=True)
    (root / "ansible.cfg").write_text("[defaults]\nhost_key_checking = True\nretry_files_enabled = False\n")
    play = (
        "- name: {name}\n  hosts: node1\n  gather_facts: false\n  tasks:\n"
        "    - name: Report {name}\n      ansible.builtin.debug:\n"
        '        msg: "check={{{{ ansible_check_mode }}}}'
        " confirmed={{{{ r1deploy_teardown_confirmed | default('no') }}}}"
        " purge={{{{ r1deploy_teardown_purge | default('no') }}}}\"\n      tags: [tagged]\n"
        "    - name: Untagged {name}\n      ansible.builtin.debug:\n        msg: untagged\n"
    )
    for name in ("site", "boilerplate", "preflight", "teardown"):
        (root / "playbooks" / f"{name}.yml").write_text(play.format(name=name))
    monkeypatch.setenv("R1DEPLOY_ROOT", str(root))
    return root


def _messages(run_dir: str) -> list[str]:
    out = []
    for line in Path(run_dir, "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "runner_on_ok":
            out.append(str(event["event_data"]["res"].get("msg")))
    return out


def test_deploy_check_teardown_run_their_playbooks(
    fake_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, doc = run_json(capsys, "deploy", "-i", str(INVENTORY), "--tags", "tagged", "--check")
    assert code == 0 and doc["playbooks"] == ["playbooks/site.yml"]
    assert doc["tasks_total"] == 1 and doc["check"] is True
    assert _messages(doc["run_dir"]) == ["check=True confirmed=no purge=no"]

    code, doc = run_json(capsys, "check", "-i", str(INVENTORY))
    assert code == 0 and doc["playbooks"] == ["playbooks/boilerplate.yml", "playbooks/preflight.yml"]
    assert [p["name"] for p in doc["plays"]] == ["boilerplate", "preflight"]

    # Not confirmed (stdin is not a terminal, no --yes): refused, nothing runs.
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115
    code, doc = run_json(capsys, "teardown", "-i", str(INVENTORY))
    assert code == 2 and "not confirmed" in doc["errors"][0]
    code, doc = run_json(capsys, "teardown", "-i", str(INVENTORY), "--yes", "--purge")
    assert code == 0 and doc["playbooks"] == ["playbooks/teardown.yml"]
    assert _messages(doc["run_dir"])[0] == "check=False confirmed=True purge=True"


def test_host_key_checking_stays_on(fake_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ansible-runner turns host key checking off unless told; the CLI keeps ansible.cfg's setting."""
    from r1deploy.runner import runner_envvars

    monkeypatch.delenv("ANSIBLE_HOST_KEY_CHECKING", raising=False)
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    assert runner_envvars(fake_project)["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    (fake_project / "ansible.cfg").write_text("[defaults]\nhost_key_checking = False\n")
    assert runner_envvars(fake_project)["ANSIBLE_HOST_KEY_CHECKING"] == "False"


def test_ctrl_c_cancels_cleanly(tmp_path: Path, state_dir: Path) -> None:
    env = dict(os.environ, R1DEPLOY_STATE_DIR=str(state_dir))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "r1deploy.cli",
            "run",
            str(PLAYBOOKS / "slow.yml"),
            "-i",
            str(INVENTORY),
            "--json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    started = False
    while time.monotonic() < deadline and not started:
        time.sleep(0.2)
        for events in state_dir.glob("runs/*/events.jsonl"):
            started = (
                '"task": "Sleep a minute"' in events.read_text() and "runner_on_start" in events.read_text()
            )
    assert started, "the slow task never started"
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["status"] == "canceled" and doc["exit_code"] == 130
    assert "Never reached when interrupted" not in [t["name"] for t in doc["tasks"]]
    assert took < 20
    assert "interrupted" in err
    leftovers = subprocess.run(["pgrep", "-f", "sleep 61"], capture_output=True, text=True).stdout.split()
    assert leftovers == []
    assert shutil.which("ansible-playbook")  # sanity: the venv's Ansible was used
