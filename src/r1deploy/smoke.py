"""``r1deploy smoke``: one real chat completion directly against vLLM and one through nginx, timed.

- direct: ``POST <vllm>/v1/chat/completions`` with the API key, streamed;
- nginx: the chat page's own path: sign in to Open WebUI as the admin over https (through nginx),
  then ``POST /api/chat/completions`` streamed (Open WebUI -> vLLM);
- nginx /v1: when the nginx role's vLLM route is enabled, the OpenAI API through nginx with the key.

Secrets (API key, admin password) are read from the inventory's credentials folder into memory and
sent only in request headers/bodies; they are never printed, logged or put on a command line.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r1deploy.bench import BenchConfig, Connection, Endpoint, RequestResult, _read_all, one_request, parse_url
from r1deploy.health import is_degenerate
from r1deploy.status import Endpoints, Stack

PROMPT = "Say hello in one short sentence."


@dataclass
class Probe:
    name: str
    url: str
    ok: bool = False
    status: int | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    signin_s: float | None = None
    output_tokens: int | None = None
    answer: str = ""
    reasoning: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _from_result(probe: Probe, result: RequestResult) -> Probe:
    probe.status = result.status
    probe.ttft_s = round(result.ttft, 3) if result.ttft is not None else None
    probe.total_s = round(result.latency, 3) if result.latency is not None else None
    probe.output_tokens = result.output_tokens or None
    probe.answer = result.text.strip()[:300]
    probe.reasoning = result.reasoning.strip()[:300]
    if not result.ok:
        probe.error = result.error
        return probe
    problem = is_degenerate(result.text + result.reasoning)
    probe.error = problem
    probe.ok = not problem
    return probe


def _chat_payload(model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _stream(
    endpoint: Endpoint,
    context: ssl.SSLContext | None,
    path: str,
    headers: dict[str, str],
    payload: dict[str, Any],
) -> RequestResult:
    conn = Connection(endpoint, context)
    try:
        config = BenchConfig(url=endpoint.origin, model=str(payload["model"]))
        return await one_request(
            conn, endpoint, config, PROMPT, path=path, headers=headers, payload=payload, collect_text=True
        )
    finally:
        await conn.close()


async def probe_direct(ep: Endpoints, api_key: str, max_tokens: int, timeout: float) -> Probe:
    endpoint = parse_url(ep.vllm_url)
    probe = Probe("direct", f"{endpoint.origin}{endpoint.path('chat')}")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    result = await asyncio.wait_for(
        _stream(endpoint, None, endpoint.path("chat"), headers, _chat_payload(ep.model, max_tokens)), timeout
    )
    return _from_result(probe, result)


async def _post_json(
    endpoint: Endpoint, context: ssl.SSLContext | None, path: str, body: dict[str, Any]
) -> tuple[int, Any]:
    conn = Connection(endpoint, context)
    try:
        status, stream = await conn.post(
            path, {"Content-Type": "application/json"}, json.dumps(body).encode()
        )
        text = (await _read_all(stream)).decode("utf-8", errors="replace")
    finally:
        await conn.close()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"detail": text[:200]}


async def probe_webui(
    ep: Endpoints, email: str, password: str, context: ssl.SSLContext, max_tokens: int, timeout: float
) -> Probe:
    """Sign in to Open WebUI through nginx, then one streamed chat completion through it."""
    assert ep.public_url
    endpoint = parse_url(ep.public_url)
    origin = endpoint.origin
    probe = Probe("nginx", f"{origin}/api/chat/completions")
    t0 = time.perf_counter()
    status, body = await asyncio.wait_for(
        _post_json(endpoint, context, "/api/v1/auths/signin", {"email": email, "password": password}), timeout
    )
    probe.signin_s = round(time.perf_counter() - t0, 3)
    token = body.get("token") if isinstance(body, dict) else None
    if status != 200 or not token:
        probe.status = status
        detail = body.get("detail") if isinstance(body, dict) else body
        probe.error = f"Open WebUI sign-in as {email} failed: HTTP {status} {detail}"
        return probe
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    result = await asyncio.wait_for(
        _stream(endpoint, context, "/api/chat/completions", headers, _chat_payload(ep.model, max_tokens)),
        timeout,
    )
    return _from_result(probe, result)


async def probe_nginx_v1(
    ep: Endpoints, api_key: str, context: ssl.SSLContext, max_tokens: int, timeout: float
) -> Probe:
    assert ep.public_url
    endpoint = parse_url(ep.public_url)
    probe = Probe("nginx_v1", f"{endpoint.origin}/v1/chat/completions")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    result = await asyncio.wait_for(
        _stream(endpoint, context, "/v1/chat/completions", headers, _chat_payload(ep.model, max_tokens)),
        timeout,
    )
    return _from_result(probe, result)


def read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FileNotFoundError(f"{what}: cannot read {path} ({exc.strerror})") from exc
    if not value:
        raise FileNotFoundError(f"{what}: {path} is empty")
    return value


async def _guard(name: str, url: str, coro: Any) -> Probe:
    try:
        return await coro
    except (OSError, ConnectionError, ssl.SSLError, TimeoutError, ValueError) as exc:
        return Probe(name, url, error=f"{type(exc).__name__}: {exc}")


def run_smoke(
    ep: Endpoints,
    *,
    email: str,
    nginx_v1: bool,
    context: ssl.SSLContext,
    max_tokens: int = 64,
    timeout: float = 120.0,
) -> dict[str, Any]:
    api_key = read_secret(ep.api_key_file, "vLLM API key")
    probes: list[Probe] = []

    async def main() -> None:
        probes.append(await _guard("direct", ep.vllm_url, probe_direct(ep, api_key, max_tokens, timeout)))
        if ep.public_url:
            password_file = ep.credentials_dir / Stack.WEBUI_ADMIN_PASSWORD_FILE
            try:
                password = read_secret(password_file, "Open WebUI admin password")
            except FileNotFoundError as exc:
                probes.append(Probe("nginx", ep.public_url, error=str(exc)))
            else:
                probes.append(
                    await _guard(
                        "nginx", ep.public_url, probe_webui(ep, email, password, context, max_tokens, timeout)
                    )
                )
            if nginx_v1:
                probes.append(
                    await _guard(
                        "nginx_v1", ep.public_url, probe_nginx_v1(ep, api_key, context, max_tokens, timeout)
                    )
                )

    asyncio.run(main())
    return {
        "schema": "r1deploy.smoke/1",
        "ok": bool(probes) and all(p.ok for p in probes),
        "model": ep.model,
        "prompt": PROMPT,
        "chat_url": ep.public_url,
        "probes": {p.name: asdict(p) for p in probes},
    }
