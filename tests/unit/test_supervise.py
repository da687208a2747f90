"""r1deploy.supervise: ready on a real probe, and a server that no longer serves is stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1deploy import supervise

METRICS = """# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="r1-tiny"} 1200.0
vllm:generation_tokens_total{engine="1",model_name="r1-tiny"} 34.0
vllm:generation_tokens_created{engine="0",model_name="r1-tiny"} 1.7e9
"""

# A stand-in for r1deploy-vllm-ready: the verdict comes from a file the test writes.
FAKE_PROBE = """
import json, pathlib, sys
state = pathlib.Path(__file__).with_name("state").read_text().strip()
detail = "" if state == "ok" else "engine dead"
print(json.dumps({"ok": state == "ok", "stage": "completion", "detail": detail}))
sys.exit(0 if state == "ok" else 1)
"""


def test_generated_tokens_sums_every_engine() -> None:
    assert supervise.generated_tokens(METRICS) == 1234.0
    assert supervise.generated_tokens("# nothing here\n") is None


def test_a_failed_probe_while_tokens_flow_is_busy_not_dead() -> None:
    verdict = supervise.judge(2, 3, "timed out", before=100.0, after=180.0)
    assert (verdict.failures, verdict.restart) == (2, False)
    assert "busy" in verdict.reason


def test_failures_in_a_row_without_progress_ask_for_a_restart() -> None:
    first = supervise.judge(0, 3, "chat completion failed", before=100.0, after=100.0)
    second = supervise.judge(first.failures, 3, "chat completion failed", before=None, after=None)
    third = supervise.judge(second.failures, 3, "chat completion failed", before=100.0, after=100.0)
    assert [first.restart, second.restart, third.restart] == [False, False, True]
    assert third.failures == 3


def test_usage_needs_the_server_command_line() -> None:
    with pytest.raises(SystemExit):
        supervise.parse_args(["--url", "http://x", "--model", "m", "--probe", "p"])
    args, child = supervise.parse_args(
        [
            "--url",
            "http://x:8000",
            "--model",
            "m",
            "--probe",
            "p",
            "--failures",
            "2",
            "--",
            "srv",
            "--port",
            "1",
        ]
    )
    assert (args.failures, child) == (2, ["srv", "--port", "1"])


def _supervisor(tmp_path: Path, child: list[str]) -> tuple[list[str], Path]:
    probe = tmp_path / "probe.py"
    probe.write_text(FAKE_PROBE)
    state = tmp_path / "state"
    state.write_text("ok")
    argv = [sys.executable, supervise.__file__, "--url", "http://127.0.0.1:9", "--model", "m"]
    argv += ["--probe", str(probe), "--interval", "0.2", "--probe-timeout", "5", "--failures", "2"]
    argv += ["--start-timeout", "20", "--", *child]
    return argv, state


def test_ready_is_reported_to_systemd_and_a_dead_engine_is_stopped(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(notify_path))
    sink.settimeout(20)
    pid_file = tmp_path / "child.pid"
    child = [
        sys.executable,
        "-c",
        f"import os,time; open({str(pid_file)!r},'w').write(str(os.getpid())); time.sleep(120)",
    ]
    argv, state = _supervisor(tmp_path, child)
    proc = subprocess.Popen(argv, env={"NOTIFY_SOCKET": str(notify_path), "PATH": "/usr/bin:/bin"})
    try:
        messages = sink.recv(4096).decode()
        assert "READY=1" in messages
        state.write_text("dead")  # the engine stops answering; /metrics (port 9) shows no progress
        assert proc.wait(timeout=30) == 1
        child_pid = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child_pid}").exists(), "the server was left running"
    finally:
        proc.kill()
        sink.close()


def test_the_server_exiting_ends_the_supervisor_with_its_status(tmp_path: Path) -> None:
    argv, _ = _supervisor(tmp_path, [sys.executable, "-c", "import time; time.sleep(1); raise SystemExit(7)"])
    assert subprocess.run(argv, timeout=30, check=False).returncode == 7


def test_sigterm_stops_the_server_and_exits_cleanly(tmp_path: Path) -> None:
    argv, _ = _supervisor(tmp_path, [sys.executable, "-c", "import time; time.sleep(120)"])
    proc = subprocess.Popen(argv)
    time.sleep(2)
    proc.terminate()
    assert proc.wait(timeout=30) == 0
