"""An asynchronous, streaming load generator for OpenAI-compatible servers (vLLM, nginx in front of it).

Stdlib only (asyncio streams, ssl, json): no extra runtime dependency, and the least client work per
streamed chunk, which matters when the load generator shares two CPU cores with the server it
measures. One keep-alive HTTP/1.1 connection per concurrent worker.

Metrics follow vLLM's own benchmark client (``vllm bench serve``) so the two can be compared:

- TTFT: request sent -> first streamed chunk carrying ``choices``;
- ITL: gaps between successive ``choices`` chunks;
- TPOT: (latency - TTFT) / (output tokens - 1), per request;
- E2E latency: request sent -> last ``choices`` chunk;
- output tokens from the final ``usage`` chunk (``stream_options.include_usage``), else chunks;
- output throughput: all output tokens / wall time of the whole run.

Percentiles are numpy's default (linear interpolation), as vLLM reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

PERCENTILES = (50, 90, 99)

# Prompts are random sequences of these words (a different sequence per request, so a server's
# prefix cache cannot serve one request from another).
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "they",
    "this",
    "which",
    "are",
    "be",
    "had",
    "not",
    "have",
    "one",
    "were",
    "all",
    "their",
    "there",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "out",
    "into",
    "so",
    "can",
    "what",
    "up",
    "said",
    "about",
    "other",
    "time",
    "than",
    "them",
    "some",
    "could",
    "these",
    "two",
    "may",
    "then",
    "first",
    "any",
    "like",
    "now",
    "my",
    "such",
    "make",
    "over",
    "our",
    "even",
    "most",
    "after",
    "also",
    "made",
    "many",
    "did",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "small",
    "large",
    "house",
    "water",
    "light",
    "river",
    "mountain",
    "city",
    "garden",
    "window",
    "table",
    "paper",
    "number",
    "sound",
    "music",
    "story",
    "color",
    "morning",
    "evening",
    "market",
    "winter",
    "summer",
    "stone",
]


class BenchError(Exception):
    """The benchmark cannot run (bad URL, unreachable server, rejected calibration)."""


class HttpError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


@dataclass
class BenchConfig:
    url: str
    model: str
    api_key: str | None = None
    concurrency: int = 4
    requests: int = 32
    prompt_tokens: int = 128
    max_tokens: int = 128
    endpoint: str = "chat"  # chat | completions
    ignore_eos: bool = False
    temperature: float | None = None
    timeout_s: float = 600.0
    insecure: bool = False
    cafile: str | None = None
    cadata: str | None = None  # a PEM to trust (the certificate nginx serves, read by `endpoints`)
    # Seed of the random prompts; None draws a fresh one per run. A repeated seed repeats the prompts,
    # and a server's prefix cache then skips their prefill: TTFT would measure the cache.
    seed: int | None = None

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("api_key")
        data["api_key_set"] = bool(self.api_key)
        data["cadata"] = bool(self.cadata)
        return data


@dataclass
class RequestResult:
    ok: bool
    start: float = 0.0
    ttft: float | None = None
    latency: float | None = None
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int | None = None
    error: str = ""
    status: int | None = None
    text: str = ""
    reasoning: str = ""


def percentile(values: Sequence[float], q: float) -> float:
    """numpy.percentile(values, q) with the default linear interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lower = math.floor(pos)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (pos - lower)


def distribution_ms(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}, "n": 0}
    out: dict[str, float | None] = {"mean": round(1000 * sum(values) / len(values), 3)}
    for q in PERCENTILES:
        out[f"p{q}"] = round(1000 * percentile(values, q), 3)
    out["n"] = len(values)
    return out


# ---- endpoints -------------------------------------------------------------------------------------


@dataclass
class Endpoint:
    scheme: str
    host: str
    port: int
    base_path: str  # ".../v1"

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{port}"

    def path(self, kind: str) -> str:
        return f"{self.base_path}/{'chat/completions' if kind == 'chat' else 'completions'}"


def parse_url(url: str) -> Endpoint:
    """``http://h:8000``, ``http://h:8000/v1`` or ``.../v1/chat/completions`` -> the API base ``/v1``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"not an http(s) URL: {url!r}")
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if not path.endswith("/v1"):
        path = f"{path}/v1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(parts.scheme, parts.hostname, port, path)


def ssl_context(config: BenchConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.cafile, cadata=config.cadata)
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# ---- a minimal HTTP/1.1 client over asyncio streams -----------------------------------------------


class Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, endpoint: Endpoint, context: ssl.SSLContext | None) -> None:
        self.endpoint = endpoint
        self.context = context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reused = False

    async def _open(self) -> None:
        ep = self.endpoint
        self.reader, self.writer = await asyncio.open_connection(
            ep.host,
            ep.port,
            ssl=self.context if ep.scheme == "https" else None,
            server_hostname=ep.host if ep.scheme == "https" else None,
            limit=1 << 22,
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, AsyncIterator[bytes]]:
        """Send a POST; return the status and an iterator over the body's bytes as they arrive.

        A kept-alive connection the server has meanwhile closed is reopened and the request resent once.
        """
        host = self.endpoint.origin.split("://", 1)[1]
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (1, 2):
            if self.writer is None or self.writer.is_closing():
                await self._open()
                self.reused = False
            assert self.reader is not None and self.writer is not None
            reused = self.reused
            self.reused = True
            try:
                self.writer.write(request)
                await self.writer.drain()
                status_line = await self.reader.readline()
            except (ConnectionError, ssl.SSLError):
                status_line = b""
            if status_line:
                break
            await self.close()
            if not reused or attempt == 2:
                raise ConnectionError("server closed the connection")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise ConnectionError(f"bad status line {status_line[:80]!r}") from exc
        response_headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        keep = response_headers.get("connection", "").lower() != "close"
        return status, self._body(response_headers, keep)

    async def _body(self, headers: dict[str, str], keep: bool) -> AsyncIterator[bytes]:
        reader = self.reader
        assert reader is not None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = await reader.readexactly(size)
                await reader.readexactly(2)
                yield data
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining > 0:
                data = await reader.read(min(remaining, 65536))
                if not data:
                    raise ConnectionError("body truncated")
                remaining -= len(data)
                yield data
        else:
            keep = False
            while data := await reader.read(65536):
                yield data
        if not keep:
            await self.close()


async def _read_all(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


def sse_messages(buffer: bytearray, data: bytes) -> list[str]:
    """Append ``data`` to ``buffer``; return the complete SSE ``data:`` payloads it now holds."""
    buffer.extend(data.replace(b"\r\n", b"\n"))
    out: list[str] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return out
        message = bytes(buffer[:end]).decode("utf-8", errors="replace")
        del buffer[: end + 2]
        payload = [line[5:].lstrip() for line in message.split("\n") if line.startswith("data:")]
        if payload:
            out.append("\n".join(payload))


# ---- requests ---------------------------------------------------------------------------------------


def make_prompt(words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(max(words, 1)))


def _headers(config: BenchConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def _payload(config: BenchConfig, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": config.model, "max_tokens": max_tokens, "stream": stream}
    if config.endpoint == "chat":
        payload["messages"] = [{"role": "user", "content": prompt}]
    else:
        payload["prompt"] = prompt
    if stream:
        payload["stream_options"] = {"include_usage": True}
    if config.ignore_eos:
        payload["ignore_eos"] = True
    if config.temperature is not None:
        payload["temperature"] = config.temperature
    return payload


async def one_request(
    conn: Connection,
    endpoint: Endpoint,
    config: BenchConfig,
    prompt: str,
    *,
    path: str | None = None,
    headers: dict[str, str] | None = None,
    payload: dict[str, Any] | None = None,
    collect_text: bool = False,
) -> RequestResult:
    """One streamed completion, timed like vLLM's client; ``collect_text`` keeps the answer (smoke)."""
    body = json.dumps(payload or _payload(config, prompt, config.max_tokens, stream=True)).encode()
    result = RequestResult(ok=False)
    start = time.perf_counter()
    result.start = start
    last = start
    chunks = 0
    try:
        status, stream = await conn.post(
            path or endpoint.path(config.endpoint), headers or _headers(config), body
        )
        result.status = status
        if status != 200:
            text = (await _read_all(stream)).decode("utf-8", errors="replace")
            result.error = f"HTTP {status}: {text[:200]}"
            return result
        buffer = bytearray()
        async for data in stream:
            for message in sse_messages(buffer, data):
                if message == "[DONE]":
                    continue
                now = time.perf_counter()
                chunk = json.loads(message)
                if chunk.get("choices"):
                    if collect_text:
                        choice = chunk["choices"][0]
                        delta = choice.get("delta") or {}
                        result.text += delta.get("content") or choice.get("text") or ""
                        result.reasoning += delta.get("reasoning") or delta.get("reasoning_content") or ""
                    if result.ttft is None:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    chunks += 1
                elif chunk.get("usage"):
                    usage = chunk["usage"]
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
                    if usage.get("prompt_tokens") is not None:
                        result.prompt_tokens = int(usage["prompt_tokens"])
                elif chunk.get("error") or chunk.get("object") == "error":
                    result.error = json.dumps(chunk)[:200]
                    await conn.close()  # the rest of the stream is unread: do not reuse
                    return result
        if result.ttft is None:
            result.error = "no streamed token received"
            return result
        result.latency = last - start
        result.output_tokens = result.output_tokens or chunks
        result.ok = True
    except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError, ssl.SSLError) as exc:
        await conn.close()
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def _prompt_tokens(conn: Connection, endpoint: Endpoint, config: BenchConfig, prompt: str) -> int:
    """Prompt tokens as a 1-token completion's ``usage`` reports them (any OpenAI-compatible server)."""
    body = json.dumps(_payload(config, prompt, 1, stream=False)).encode()
    status, stream = await conn.post(endpoint.path(config.endpoint), _headers(config), body)
    text = (await _read_all(stream)).decode("utf-8", errors="replace")
    if status != 200:
        raise HttpError(status, text)
    usage = json.loads(text).get("usage") or {}
    if "prompt_tokens" not in usage:
        raise BenchError("the server reports no usage.prompt_tokens; cannot size prompts")
    return int(usage["prompt_tokens"])


def _tokenize_path(endpoint: Endpoint) -> str:
    """vLLM's ``/tokenize`` sits next to ``/v1`` (``http://head:8000/tokenize``)."""
    return f"{endpoint.base_path.removesuffix('/v1')}/tokenize"


async def _tokenize_count(conn: Connection, endpoint: Endpoint, config: BenchConfig, prompt: str) -> int:
    """Prompt tokens as vLLM's ``/tokenize`` counts them with the served model's tokenizer.

    The chat form renders the chat template with the generation prompt, as a chat completion does;
    the completions form adds the special tokens a completion adds. No inference runs.
    """
    payload: dict[str, Any] = {"model": config.model}
    if config.endpoint == "chat":
        payload["messages"] = [{"role": "user", "content": prompt}]
        payload["add_generation_prompt"] = True
    else:
        payload["prompt"] = prompt
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    status, stream = await conn.post(_tokenize_path(endpoint), headers, json.dumps(payload).encode())
    text = (await _read_all(stream)).decode("utf-8", errors="replace")
    if status != 200:
        raise HttpError(status, text)
    try:
        count = json.loads(text)["count"]
    except (ValueError, KeyError, TypeError) as exc:
        raise HttpError(status, f"not a /tokenize answer: {text[:120]}") from exc
    return int(count)


class TokenCounter:
    """Counts a request's prompt tokens exactly: ``/tokenize`` where the server has it (vLLM), else
    the ``usage`` of a 1-token completion (e.g. through nginx, which routes only ``/v1/``)."""

    def __init__(self, conn: Connection, endpoint: Endpoint, config: BenchConfig) -> None:
        self.conn, self.endpoint, self.config = conn, endpoint, config
        self.method: str | None = None
        self.calls = 0

    async def count(self, prompt: str) -> int:
        self.calls += 1
        if self.method in (None, "tokenize"):
            try:
                n = await _tokenize_count(self.conn, self.endpoint, self.config, prompt)
                self.method = "tokenize"
                return n
            except HttpError:
                if self.method == "tokenize":
                    raise
                self.method = "usage"
        return await _prompt_tokens(self.conn, self.endpoint, self.config, prompt)


@dataclass
class Calibration:
    words: int  # the first guess for every prompt; each is then sized exactly
    tokens_per_word: float
    overhead_tokens: float
    method: str = ""  # tokenize | usage
    count_calls: int = 0


async def calibrate(counter: TokenCounter, config: BenchConfig) -> Calibration:
    """The first guess of words per prompt for ``prompt_tokens`` tokens (chat template included).

    Two counts: the one word "the" gives the template's overhead (the word itself one token), 256
    random words the tokens per word. :func:`exact_prompt` then makes each prompt exactly right.
    """
    rng = random.Random((config.seed or 0) ^ 0x5EED)
    k = 256
    t_one = await counter.count("the")
    t_long = await counter.count(make_prompt(k, rng))
    overhead = max(t_one - 1, 0)
    if config.prompt_tokens <= overhead:
        raise BenchError(
            f"--prompt-tokens {config.prompt_tokens} is not more than this endpoint's template overhead "
            f"({overhead} tokens): ask for at least {overhead + 1}"
        )
    per_word = max((t_long - overhead) / k, 0.1)
    words = max(round((config.prompt_tokens - overhead) / per_word), 1)
    return Calibration(words, round(per_word, 4), round(overhead, 2), counter.method or "")


# Adjustments one prompt may take (each adds or removes a word) before sizing gives up.
MAX_SIZING_STEPS = 200


async def exact_prompt(counter: TokenCounter, target: int, words: int, rng: random.Random) -> str:
    """A fresh random-word prompt of exactly ``target`` tokens as the server counts them.

    Starts from ``words`` words, then adds a word while short and drops the last one while long. A
    word that overshoots is dropped and another drawn, so the count lands on the target exactly.
    """
    chosen = [rng.choice(_WORDS) for _ in range(max(words, 1))]
    for _ in range(MAX_SIZING_STEPS):
        n = await counter.count(" ".join(chosen))
        if n == target:
            return " ".join(chosen)
        if n < target:
            chosen.append(rng.choice(_WORDS))
        elif len(chosen) > 1:
            chosen.pop()
        else:
            break
    raise BenchError(f"cannot make a prompt of exactly {target} tokens with this tokenizer")


async def sized_prompts(
    conn: Connection, endpoint: Endpoint, config: BenchConfig, count: int, rng: random.Random
) -> tuple[list[str], Calibration]:
    """``count`` fresh prompts of exactly ``config.prompt_tokens`` tokens each, and how they were made."""
    counter = TokenCounter(conn, endpoint, config)
    sized = await calibrate(counter, config)
    prompts = [await exact_prompt(counter, config.prompt_tokens, sized.words, rng) for _ in range(count)]
    return prompts, replace(sized, method=counter.method or "", count_calls=counter.calls)


@dataclass
class BenchResult:
    config: dict[str, Any]
    calibration: dict[str, Any]
    results: list[RequestResult]
    duration_s: float

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.results if r.ok]
        errors = [r for r in self.results if not r.ok]
        output_tokens = sum(r.output_tokens for r in ok)
        prompt_counts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
        tpot = [
            (r.latency - r.ttft) / (r.output_tokens - 1)
            for r in ok
            if r.latency is not None and r.ttft is not None and r.output_tokens > 1
        ]
        error_kinds: dict[str, int] = {}
        for r in errors:
            error_kinds[r.error[:120]] = error_kinds.get(r.error[:120], 0) + 1
        duration = self.duration_s
        return {
            "schema": "r1deploy.bench/1",
            "ok": not errors and bool(ok),
            "config": self.config,
            "calibration": self.calibration,
            "requests": len(self.results),
            "completed": len(ok),
            "errors": len(errors),
            "error_kinds": error_kinds,
            "duration_s": round(duration, 3),
            "request_throughput_rps": round(len(ok) / duration, 4) if duration > 0 else None,
            "output_tokens": output_tokens,
            "output_throughput_tok_s": round(output_tokens / duration, 2) if duration > 0 else None,
            "prompt_tokens_mean": round(sum(prompt_counts) / len(prompt_counts), 2)
            if prompt_counts
            else None,
            "prompt_tokens_min": min(prompt_counts) if prompt_counts else None,
            "prompt_tokens_max": max(prompt_counts) if prompt_counts else None,
            "ttft_ms": distribution_ms([r.ttft for r in ok if r.ttft is not None]),
            "itl_ms": distribution_ms([gap for r in ok for gap in r.itl]),
            "tpot_ms": distribution_ms(tpot),
            "e2e_latency_ms": distribution_ms([r.latency for r in ok if r.latency is not None]),
        }


async def run_bench(config: BenchConfig, prompts: Sequence[str] | None = None) -> BenchResult:
    """Run the benchmark: ``requests`` streamed requests, ``concurrency`` at a time.

    Without ``prompts`` each request gets a fresh random-word prompt of exactly ``prompt_tokens``
    tokens (:func:`sized_prompts`: counted by the server's ``/tokenize``, before the clock starts); with
    them (a user's prompt file, or another client's prompts for a comparison) they are used in order,
    cycled if fewer than ``requests``, and there is no calibration (nor its warm-up requests).
    """
    if config.concurrency < 1 or config.requests < 1 or config.max_tokens < 1 or config.prompt_tokens < 1:
        raise BenchError("concurrency, requests, prompt tokens and max tokens must be at least 1")
    if prompts is not None and not prompts:
        raise BenchError("the prompt list is empty")
    if config.seed is None:
        config = replace(config, seed=random.SystemRandom().randrange(2**31))
    endpoint = parse_url(config.url)
    context = ssl_context(config) if endpoint.scheme == "https" else None
    calibration: dict[str, Any] = {"skipped": "prompts given"}
    if prompts is None:
        probe = Connection(endpoint, context)
        rng = random.Random(config.seed)
        try:
            prompts, sized = await asyncio.wait_for(
                sized_prompts(probe, endpoint, config, config.requests, rng), timeout=config.timeout_s
            )
        except HttpError as exc:
            raise BenchError(
                f"{endpoint.origin}{endpoint.path(config.endpoint)} refused the probe: {exc}"
            ) from exc
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError) as exc:
            raise BenchError(f"cannot reach {endpoint.origin}: {type(exc).__name__}: {exc}") from exc
        finally:
            await probe.close()
        calibration = asdict(sized)
    else:
        prompts = [prompts[i % len(prompts)] for i in range(config.requests)]
    todo: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        todo.put_nowait(prompt)
    results: list[RequestResult] = []

    async def worker() -> None:
        conn = Connection(endpoint, context)
        try:
            while True:
                try:
                    prompt = todo.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    result = await asyncio.wait_for(
                        one_request(conn, endpoint, config, prompt), config.timeout_s
                    )
                except TimeoutError:
                    await conn.close()
                    result = RequestResult(ok=False, error=f"timeout after {config.timeout_s:.0f}s")
                results.append(result)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(config.concurrency, config.requests))))
    duration = time.perf_counter() - t0
    if not any(r.ok for r in results) and all(_unreachable(r.error) for r in results):
        raise BenchError(f"cannot reach {endpoint.origin}: {results[0].error}")
    return BenchResult(config.public(), calibration, results, duration)


def _unreachable(error: str) -> bool:
    return error.startswith(("ConnectionRefusedError", "OSError", "gaierror", "TimeoutError", "timeout"))


def plot(result: BenchResult, path: Path) -> None:
    """Histograms of TTFT, inter-token latency and end-to-end latency, with p50/p90/p99 marked."""
    try:
        import matplotlib
    except ImportError as exc:  # the `bench` extra
        raise BenchError("--plot needs matplotlib: pip install 'r1deploy[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result.results if r.ok]
    series = [
        ("time to first token", [1000 * r.ttft for r in ok if r.ttft is not None]),
        ("inter-token latency", [1000 * g for r in ok for g in r.itl]),
        ("end-to-end latency", [1000 * r.latency for r in ok if r.latency is not None]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (title, values) in zip(axes, series, strict=True):
        if values:
            positive = [v for v in values if v > 0]
            log_scale = (
                bool(positive) and max(positive) / min(positive) > 50
            )  # a long tail: keep the body visible
            bins: Any = min(50, max(10, len(values) // 4))
            if log_scale:
                low, high = math.log10(min(positive)), math.log10(max(positive))
                bins = [10 ** (low + (high - low) * i / 40) for i in range(41)]
            ax.hist(values, bins=bins, color="#4878a8", alpha=0.85)
            for q, style in zip(PERCENTILES, (":", "--", "-"), strict=True):
                ax.axvline(percentile(values, q), color="#c44e52", linestyle=style, label=f"p{q}")
            ax.legend()
            if log_scale:
                ax.set_xscale("log")
        ax.set_title(f"{title} (n={len(values)})")
        ax.set_xlabel("ms")
        ax.set_ylabel("count")
    cfg = result.config
    fig.suptitle(
        f"{cfg['model']} at {cfg['url']}: concurrency {cfg['concurrency']}, {cfg['requests']} requests, "
        f"~{cfg['prompt_tokens']} prompt / {cfg['max_tokens']} max tokens"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_api_key(path: str | None, environ: dict[str, str]) -> str | None:
    """From a file (its content, or the value of a ``VLLM_API_KEY=`` line), else ``$R1DEPLOY_API_KEY``."""
    if path:
        text = Path(path).expanduser().read_text(encoding="utf-8")
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in ("VLLM_API_KEY", "OPENAI_API_KEY", "R1DEPLOY_API_KEY"):
                return value.strip().strip("\"'")
        return text.strip() or None
    return environ.get("R1DEPLOY_API_KEY") or environ.get("OPENAI_API_KEY") or None
