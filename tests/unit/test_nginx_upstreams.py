"""nginx's upstream connection reuse against the upstreams' own keep-alive.

Open WebUI and vLLM's API server run under uvicorn, which closes an idle keep-alive connection after
5 s (uvicorn's timeout_keep_alive; vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE). An nginx upstream that keeps
idle connections longer can reuse one the upstream is closing at that moment: a POST then fails with
502 (nginx never retries a non-idempotent request). CI met it once in ~1000 chats.
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "roles" / "nginx" / "templates" / "nginx.conf.j2"
UVICORN_KEEP_ALIVE_S = 5


def test_every_upstream_drops_idle_connections_before_uvicorn_does() -> None:
    blocks = re.findall(r"upstream (\w+) \{(.*?)\n    \}", TEMPLATE.read_text(), re.DOTALL)
    assert {name for name, _ in blocks} == {"r1deploy_open_webui", "r1deploy_vllm"}
    for name, body in blocks:
        if "keepalive " not in body:
            continue  # no connection reuse at all
        found = re.search(r"keepalive_timeout (\d+)s;", body)
        assert found, f"{name}: keepalive without keepalive_timeout (nginx's default 60 s > uvicorn's 5 s)"
        assert int(found.group(1)) < UVICORN_KEEP_ALIVE_S, name
