"""The readiness rule shared by the vllm_server role and the CLI (r1deploy.health)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from r1deploy import health


@pytest.mark.parametrize(
    ("text", "bad"),
    [("", True), ("   ", True), ("!!!!!!!!", True), ("Hello there", False), ("ok", False), ("!!", False)],
)
def test_degenerate_output(text: str, bad: bool) -> None:
    assert bool(health.is_degenerate(text)) is bad


class _FakeVllm(BaseHTTPRequestHandler):
    """An OpenAI-shaped server on loopback whose answer the test chooses (stand-in for vLLM's API)."""

    answer = "Hello"
    key = "k3y"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
        elif self.headers.get("Authorization") != f"Bearer {self.key}":
            self._send(401, {"error": "unauthorized"})
        else:
            self._send(200, {"data": [{"id": "r1-tiny"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        message = {"role": "assistant", "content": self.answer, "reasoning": ""}
        self._send(200, {"choices": [{"message": message}]})


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeVllm)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_ready_when_the_model_answers(server: str) -> None:
    _FakeVllm.answer = "Hello from the model"
    result = health.check(server, "r1-tiny", "k3y", timeout=5)
    assert result.ok and result.stage == "ready" and result.content == "Hello from the model"


def test_not_ready_on_fp16_overflow_output(server: str) -> None:
    _FakeVllm.answer = "!!!!!!!!!!!!"
    result = health.check(server, "r1-tiny", "k3y", timeout=5)
    assert not result.ok and "repeated character" in result.detail


def test_not_ready_when_the_served_name_differs(server: str) -> None:
    _FakeVllm.answer = "Hello"
    result = health.check(server, "deepseek-r1", "k3y", timeout=5)
    assert not result.ok and result.stage == "models" and "r1-tiny" in result.detail


def test_wrong_key_is_reported(server: str) -> None:
    result = health.check(server, "r1-tiny", "wrong", timeout=5)
    assert not result.ok and "401" in result.detail


def test_key_is_read_from_an_env_file(tmp_path: Path) -> None:
    env = tmp_path / "secrets.env"
    env.write_text("OTHER=1\nVLLM_API_KEY=abc123\n")
    assert health.read_key(str(env)) == "abc123"


def test_unreachable_server_times_out_with_the_url() -> None:
    result = health.check("http://127.0.0.1:9", "m", "", timeout=0.5)
    assert not result.ok and "127.0.0.1:9/health" in result.detail
