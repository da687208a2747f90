#!/usr/bin/env python3
"""Is a vLLM OpenAI server really ready? ``/health``, ``/v1/models``, and one real chat completion.

A 200 from ``/health`` does not mean generation works: an executor can be dead behind a live API
(vllm #16259), and fp16 overflow on Qwen2 under V100 yields "!!!!" (vllm #14126). So readiness here
means the served model answers a chat request with non-degenerate text.

Stdlib only: the ``vllm_server`` role copies this file onto the head as its readiness probe, and the
CLI imports it, so both apply the same rule. The API key is read from a file or the environment,
never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any


def is_degenerate(text: str) -> str:
    """Why ``text`` is not a usable answer ("" when it is fine)."""
    stripped = text.strip()
    if not stripped:
        return "the model returned no text"
    if len(set(stripped)) == 1 and len(stripped) >= 3:
        return f"the model returned one repeated character ({stripped[:12]!r}...): fp16 overflow?"
    if "\ufffd" in stripped and stripped.count("\ufffd") * 2 >= len(stripped):
        return "the model returned mostly undecodable bytes"
    return ""


@dataclass
class Readiness:
    ok: bool = False
    stage: str = "health"
    detail: str = ""
    seconds_to_healthy: float | None = None
    models: list[str] = field(default_factory=list)
    reasoning: str = ""
    content: str = ""
    completion_seconds: float | None = None


def _request(url: str, key: str, payload: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def check(base_url: str, model: str, key: str, timeout: float, prompt: str = "Say hello.") -> Readiness:
    """Wait up to ``timeout`` seconds for health, then check the model list and one completion."""
    base_url = base_url.rstrip("/")
    result = Readiness()
    start = time.monotonic()
    while True:
        try:
            urllib.request.urlopen(base_url + "/health", timeout=10).close()
            result.seconds_to_healthy = round(time.monotonic() - start, 1)
            break
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() - start > timeout:
                result.detail = f"{base_url}/health did not answer within {timeout:.0f}s ({exc})"
                return result
            time.sleep(2)
    result.stage = "models"
    try:
        listing = _request(base_url + "/v1/models", key)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        result.detail = f"{base_url}/v1/models failed: {exc}"
        return result
    result.models = [m.get("id", "") for m in listing.get("data", [])]
    if model not in result.models:
        result.detail = f"{model!r} is not served; the server lists {result.models}"
        return result
    result.stage = "completion"
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 128,
    }
    t0 = time.monotonic()
    try:
        answer = _request(base_url + "/v1/chat/completions", key, payload, timeout=max(60.0, timeout))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        result.detail = f"chat completion failed: {exc}"
        return result
    result.completion_seconds = round(time.monotonic() - t0, 2)
    message = answer["choices"][0]["message"]
    result.content = message.get("content") or ""
    # vLLM >= 0.11 names the field `reasoning`; older releases `reasoning_content`.
    result.reasoning = message.get("reasoning") or message.get("reasoning_content") or ""
    problem = is_degenerate(result.content + result.reasoning)
    if problem:
        result.detail = problem
        return result
    result.ok = True
    result.stage = "ready"
    return result


def read_key(path: str | None) -> str:
    """The API key from an env-style file (``VLLM_API_KEY=...``), else ``VLLM_API_KEY``."""
    if path:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name, _, value = line.strip().partition("=")
                if name == "VLLM_API_KEY":
                    return value.strip().strip('"')
        return ""
    return os.environ.get("VLLM_API_KEY", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that a vLLM OpenAI server really serves.")
    parser.add_argument("--url", required=True, help="base URL, e.g. http://10.0.0.11:8000")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--key-file", help="env file with VLLM_API_KEY=... (default: the environment)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    result = check(args.url, args.model, read_key(args.key_file), args.timeout)
    print(json.dumps(asdict(result), sort_keys=True))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
