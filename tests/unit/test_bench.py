"""The load generator against a scripted OpenAI-compatible streaming server on loopback.

The server streams with known delays (first token after TTFT, then one chunk every ITL), counts
prompt tokens with a known rule and fails every k-th request, so the client's measurements,
calibration, error counting and keep-alive can be checked against what really happened.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from r1deploy import cli
from r1deploy.bench import BenchConfig, BenchError, parse_url, percentile, run_bench, sse_messages

KEY = "bench-test-key-0123456789abcdef"


@dataclass
class Script:
    ttft: float = 0.05
    itl: float = 0.02
    tokens: int = 8
    fail_every: int = 0  # every k-th streamed request answers 500
    overhead_tokens: int = 7  # the chat template's tokens around the user's content
    tokenize: bool = True  # serve vLLM's /tokenize (nginx routes only /v1/: then a 404)
    tokenize_calls: int = 0
    streamed: int = 0
    connections: int = 0
    auth: set[str] = field(default_factory=set)
    payloads: list[dict] = field(default_factory=list)


async def _handle(script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    script.connections += 1
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                return
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = json.loads(await reader.readexactly(int(headers["content-length"])))
            script.auth.add(headers.get("authorization", ""))
            words = (body.get("messages") or [{}])[0].get("content", "").split()
            # A tokenizer-like rule: short words are one token, longer ones two.
            prompt_tokens = script.overhead_tokens + sum(1 if len(w) <= 3 else 2 for w in words)
            if request_line.split()[1].endswith(b"/tokenize"):
                script.tokenize_calls += 1
                status = b"200 OK" if script.tokenize else b"404 Not Found"
                data = json.dumps({"count": prompt_tokens} if script.tokenize else {"detail": "Not Found"})
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n{data}".encode()
                )
                await writer.drain()
                continue
            script.payloads.append(body)
            if not body.get("stream"):
                data = json.dumps(
                    {"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1}}
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n{data}".encode()
                )
                await writer.drain()
                continue
            script.streamed += 1
            if script.fail_every and script.streamed % script.fail_every == 0:
                data = b'{"error": "scripted failure"}'
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(data) + data
                )
                await writer.drain()
                continue
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )

            def chunk(payload: str) -> bytes:
                data = f"data: {payload}\n\n".encode()
                return b"%x\r\n" % len(data) + data + b"\r\n"

            await asyncio.sleep(script.ttft)
            for i in range(script.tokens):
                if i:
                    await asyncio.sleep(script.itl)
                delta = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
                writer.write(chunk(json.dumps(delta)))
                await writer.drain()
            usage = {
                "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": script.tokens},
            }
            writer.write(chunk(json.dumps(usage)) + chunk("[DONE]") + b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        return
    finally:
        writer.close()


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        srv = await asyncio.start_server(lambda r, w: _handle(script, r, w), "127.0.0.1", 0)
        holder["server"] = srv
        holder["port"] = srv.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(5)
    yield f"http://127.0.0.1:{holder['port']}/v1", script

    async def shutdown() -> None:
        srv = holder["server"]
        assert isinstance(srv, asyncio.Server)
        srv.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_measures_what_the_server_did(server: tuple[str, Script]) -> None:
    url, script = server
    config = BenchConfig(
        url=url, model="m", api_key=KEY, concurrency=4, requests=16, prompt_tokens=101, max_tokens=8, seed=7
    )
    summary = asyncio.run(run_bench(config)).summary()
    assert summary["ok"] and summary["completed"] == 16 and summary["errors"] == 0
    assert summary["output_tokens"] == 16 * script.tokens
    # Timings: at least what the server waited, and not wildly more (a shared 2-core machine).
    ttft, itl, e2e = summary["ttft_ms"], summary["itl_ms"], summary["e2e_latency_ms"]
    # Lower bounds only: the server's own waits; how much more a busy machine adds is not asserted.
    assert ttft["p50"] >= 50
    assert itl["p50"] >= 20
    assert itl["n"] == 16 * (script.tokens - 1)
    assert e2e["p50"] >= 50 + 7 * 20
    assert ttft["p50"] <= ttft["p90"] <= ttft["p99"]
    assert summary["tpot_ms"]["p50"] >= 20  # (latency - ttft) / (tokens - 1) ~ the ITL
    duration = summary["duration_s"]
    assert summary["output_throughput_tok_s"] == pytest.approx(16 * script.tokens / duration, rel=0.01)
    # Every prompt exactly the asked size as the server counts it (template included), whatever its
    # tokenizer: here words of one or two tokens, so sizing must correct the guess word by word.
    assert summary["prompt_tokens_min"] == summary["prompt_tokens_max"] == 101
    assert summary["calibration"]["method"] == "tokenize" and script.tokenize_calls >= 2 + 16
    assert summary["calibration"]["overhead_tokens"] == 7
    tokens_per_word = summary["calibration"]["tokens_per_word"]
    assert tokens_per_word > 1
    assert tokens_per_word < 2
    # Every request streamed with usage, a distinct prompt (no shared prefix cache hits), the key as a header.
    streamed = [p for p in script.payloads if p["stream"]]
    assert all(p["stream_options"] == {"include_usage": True} and p["max_tokens"] == 8 for p in streamed)
    assert len({p["messages"][0]["content"] for p in streamed}) == 16
    assert script.auth == {f"Bearer {KEY}"}
    assert KEY not in json.dumps(summary)
    # One keep-alive connection per worker, plus the calibration probe's.
    assert script.connections == 4 + 1


def test_prompts_are_exact_without_tokenize_too(server: tuple[str, Script]) -> None:
    """Through nginx (only /v1/ routed) the sizes come from 1-token completions' usage: still exact."""
    url, script = server
    script.tokenize = False
    config = BenchConfig(
        url=url, model="m", concurrency=2, requests=6, prompt_tokens=40, max_tokens=4, seed=3
    )
    summary = asyncio.run(run_bench(config)).summary()
    assert summary["ok"] and summary["prompt_tokens_min"] == summary["prompt_tokens_max"] == 40
    assert summary["calibration"]["method"] == "usage"


def test_prompt_tokens_below_the_template_overhead_are_refused(server: tuple[str, Script]) -> None:
    url, _ = server
    config = BenchConfig(url=url, model="m", requests=1, prompt_tokens=5, max_tokens=4)
    with pytest.raises(BenchError, match="at least 8"):
        asyncio.run(run_bench(config))


def test_prompts_are_fresh_per_run_unless_a_seed_repeats_them(server: tuple[str, Script]) -> None:
    """A server's prefix cache would serve repeated prompts: only an explicit --seed repeats them."""
    url, script = server

    def prompts(seed: int | None) -> tuple[int | None, set[str]]:
        script.payloads.clear()
        result = asyncio.run(run_bench(BenchConfig(url=url, model="m", requests=4, max_tokens=2, seed=seed)))
        streamed = {p["messages"][0]["content"] for p in script.payloads if p["stream"]}
        return result.config["seed"], streamed

    seed_a, first = prompts(None)
    seed_b, second = prompts(None)
    assert seed_a != seed_b and not first & second
    assert prompts(seed_a) == (seed_a, first)


def test_prompts_file_is_used_as_given(
    server: tuple[str, Script], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, script = server
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "first question"}\n{"prompt": "second question"}\n')
    argv = [
        "bench",
        "--url",
        url,
        "--model",
        "m",
        "-n",
        "5",
        "-c",
        "1",
        "--prompts-file",
        str(prompts),
        "--json",
    ]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["calibration"] == {"skipped": "prompts given"}
    sent = [p["messages"][0]["content"] for p in script.payloads]
    assert sent == ["first question", "second question"] * 2 + ["first question"]  # no probes, cycled
    (tmp_path / "empty.txt").write_text("\n")
    assert (
        cli.main(["bench", "--url", url, "--model", "m", "--prompts-file", str(tmp_path / "empty.txt")]) == 2
    )


def test_errors_are_counted_not_fatal(server: tuple[str, Script]) -> None:
    url, script = server
    script.fail_every = 4
    summary = asyncio.run(run_bench(BenchConfig(url=url, model="m", concurrency=2, requests=12))).summary()
    assert summary["errors"] == 3 and summary["completed"] == 9
    assert summary["ok"] is False
    assert any("HTTP 500" in kind for kind in summary["error_kinds"])


def test_cli_json_plot_and_exit_codes(
    server: tuple[str, Script],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, script = server
    key_file = tmp_path / "key"
    key_file.write_text(f"VLLM_API_KEY={KEY}\n")
    plot = tmp_path / "latency.png"
    argv = ["bench", "--url", url, "--model", "m", "--api-key-file", str(key_file), "-c", "2", "-n", "6"]
    code = cli.main([*argv, "--json", "--plot", str(plot)])
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert code == 0 and doc["exit_code"] == 0 and doc["completed"] == 6
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert script.auth == {f"Bearer {KEY}"} and KEY not in out
    # The key can come from the environment instead.
    monkeypatch.setenv("R1DEPLOY_API_KEY", "from-env-key-123456")
    assert cli.main(["bench", "--url", url, "--model", "m", "-n", "2", "--json"]) == 0
    assert "Bearer from-env-key-123456" in script.auth
    capsys.readouterr()
    # Some requests failed: exit 1.
    script.fail_every = 2
    assert cli.main([*argv, "--json"]) == 1
    capsys.readouterr()
    # Nothing listening: exit 3.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert cli.main(["bench", "--url", f"http://127.0.0.1:{closed}/v1", "--model", "m", "--json"]) == 3
    assert "cannot reach" in json.loads(capsys.readouterr().out)["errors"][0]


def test_percentile_matches_numpy() -> None:
    numpy = pytest.importorskip("numpy")
    values = [0.3, 1.0, 7.5, 2.2, 9.9, 4.1, 0.01]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))


def test_url_forms_and_sse_framing() -> None:
    assert parse_url("http://h:8000").path("chat") == "/v1/chat/completions"
    assert parse_url("http://h:8000/v1/").path("completions") == "/v1/completions"
    assert parse_url("https://h/v1/chat/completions").origin == "https://h"
    buffer = bytearray()
    assert sse_messages(buffer, b'data: {"a": 1}\r\n\r\n: ping\n\ndata: [DO') == ['{"a": 1}']
    assert sse_messages(buffer, b"NE]\n\n") == ["[DONE]"]
