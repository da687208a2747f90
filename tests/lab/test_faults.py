"""Faults the cluster survives with no command run: each time the chat API serves again by itself.

Kill the worker's raylet, restart the worker host, kill vLLM's server process, restart the head host.
After each: the chat API answers again (timed from the fault), the Ray cluster has every node again
(a new node ID for a node that came back), and Open WebUI still has its admin and an earlier chat.
Times go to test-artifacts/numbers.json (reported, never asserted); every wait is bounded.

The lab runs vLLM with the mp executor (vLLM's CPU build refuses Ray), so a Ray fault does not stop
the chat API here; on GPU clusters vLLM's supervisor restarts the server once the cluster is whole.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.lab.deployed import LAB_RAY_PORT, LAB_SERVICE_USER, LAB_VENV
from tests.lab.helpers import on_host

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"
MODEL = "r1-tiny"
RECOVERY_LIMIT = 420.0  # seconds; a fault not recovered by then fails the test


def _docker(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def _exec(host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A shell command in a lab container (docker exec: works while SSH is not up yet)."""
    return subprocess.run(
        [DOCKER, "exec", host, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wait(what: str, check: Callable[[], bool], limit: float = RECOVERY_LIMIT, pause: float = 1.0) -> float:
    """Seconds until ``check()`` holds; fails the test with ``what`` after ``limit`` seconds."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return round(time.monotonic() - start, 1)
        except (httpx.HTTPError, OSError, subprocess.TimeoutExpired, ValueError):
            pass
        if time.monotonic() - start > limit:
            pytest.fail(f"{what}: not recovered within {limit:.0f} s", pytrace=False)
        time.sleep(pause)


@dataclass
class Cluster:
    lab: object  # the deployed_lab fixture
    head: str
    head_ip: str
    worker: str
    worker_ip: str

    def chat_serves(self) -> bool:
        """One chat completion with non-empty text, as a client of the API sees it."""
        r = httpx.post(
            f"{self.lab.vllm_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.lab.api_key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hello! What can you do?"}],
                "temperature": 0,
                "max_tokens": 32,
            },
            timeout=30,
        )
        if r.status_code != 200:
            return False
        message = r.json()["choices"][0]["message"]
        return bool((message.get("content") or "") + (message.get("reasoning") or ""))

    def ray_nodes(self) -> dict[str, list[str]]:
        """Alive node IDs per address, as the head's GCS sees them (with the token, as the service user)."""
        proc = _exec(
            self.head,
            f"sudo -u {LAB_SERVICE_USER} {LAB_VENV}/bin/python /opt/r1deploy/bin/r1deploy-ray-wait"
            f" --address {self.head_ip}:{LAB_RAY_PORT} --timeout 5 2>/dev/null | tail -1",
            timeout=90,
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            return {}
        return json.loads(proc.stdout.strip())["node_ids"]

    def pid(self, host: str, pattern: str) -> int:
        proc = _exec(host, f"pgrep -o -f '{pattern}'")
        return int(proc.stdout.strip() or 0)


@dataclass
class WebUI:
    url: str
    cafile: Path
    email: str
    password: str
    chat_id: str = ""
    title: str = ""

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=str(self.cafile)), **kw
        )

    def sign_in(self) -> str:
        with self.client(timeout=60) as c:
            r = c.post("/api/v1/auths/signin", json={"email": self.email, "password": self.password})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def chat_titles(self) -> list[str]:
        with self.client(timeout=60, headers={"Authorization": f"Bearer {self.sign_in()}"}) as c:
            r = c.get("/api/v1/chats/")
        assert r.status_code == 200, r.text
        return [chat["title"] for chat in r.json()]


@pytest.fixture(scope="module")
def cluster(deployed_lab) -> Cluster:
    head, head_ip = next(iter(deployed_lab.groups["ray_head"].items()))
    worker, worker_ip = next(iter(deployed_lab.groups["ray_workers"].items()))
    return Cluster(deployed_lab, head, head_ip, worker, worker_ip)


@pytest.fixture(scope="module")
def webui(lab, deployed_lab, tmp_path_factory) -> WebUI:
    """The admin and a chat made before the faults."""
    host = next(iter(deployed_lab.groups["frontend"]))
    public_ip = next(h.public_ip for h in lab.hosts if h.name == host)
    cafile = tmp_path_factory.mktemp("tls") / "frontend.pem"
    cafile.write_text(on_host(deployed_lab.inventory, host, "cat /etc/nginx/r1deploy/tls/selfsigned.crt"))
    email = on_host(
        deployed_lab.inventory, host, "sed -n 's/^WEBUI_ADMIN_EMAIL=//p' /etc/open-webui/secrets.env"
    ).strip()
    password = (deployed_lab.inventory / "credentials" / "open_webui_admin_password").read_text().strip()
    ui = WebUI(f"https://{public_ip}", cafile, email, password)
    ui.title = f"before the faults {int(time.time())}"
    with ui.client(timeout=60, headers={"Authorization": f"Bearer {ui.sign_in()}"}) as c:
        r = c.post("/api/v1/chats/new", json={"chat": {"title": ui.title, "messages": []}})
    assert r.status_code == 200, r.text
    ui.chat_id = r.json()["id"]
    return ui


def _recovered(cluster: Cluster, webui: WebUI, name: str, fault_at: float, old_worker_ids: list[str]) -> None:
    """Wait for the chat API and the complete Ray cluster; record both times; check Open WebUI.

    ``old_worker_ids``: the worker's node IDs before the fault, when the fault replaced its raylet
    (it must come back as a new node); empty when any live worker node will do.
    """
    chat = _wait(f"{name}: the chat API", cluster.chat_serves)
    chat_total = round(time.monotonic() - fault_at, 1)

    def worker_rejoined() -> bool:
        nodes = cluster.ray_nodes()
        ids = nodes.get(cluster.worker_ip, [])
        return cluster.head_ip in nodes and bool(ids) and not set(ids) & set(old_worker_ids)

    _wait(f"{name}: the worker back in the Ray cluster", worker_rejoined, pause=2)
    ray_total = round(time.monotonic() - fault_at, 1)
    cluster.lab.record(f"fault_{name}_chat_serves_seconds", chat_total)
    cluster.lab.record(f"fault_{name}_ray_whole_seconds", ray_total)
    print(
        f"{name}: chat API serving {chat_total} s after the fault (polled {chat} s); Ray whole {ray_total} s"
    )
    assert webui.title in webui.chat_titles(), f"{name}: the chat made before the faults is gone"


def _worker_ids(cluster: Cluster) -> list[str]:
    nodes: dict[str, list[str]] = {}

    def complete() -> bool:
        nodes.update(cluster.ray_nodes())
        return bool(nodes.get(cluster.worker_ip)) and cluster.head_ip in nodes

    _wait("the Ray cluster before the fault", complete, limit=120, pause=2)
    return nodes[cluster.worker_ip]


@pytest.mark.destructive(order=20)
def test_killed_worker_raylet_rejoins(cluster: Cluster, webui: WebUI) -> None:
    old = _worker_ids(cluster)
    raylet = cluster.pid(cluster.worker, r"^\S*/raylet ")
    assert raylet, "no raylet runs on the worker"
    _exec(cluster.worker, f"kill -KILL {raylet}")
    _recovered(cluster, webui, "worker_raylet_killed", time.monotonic(), old)
    assert cluster.pid(cluster.worker, r"^\S*/raylet ") not in (0, raylet)


@pytest.mark.destructive(order=21)
def test_restarted_worker_host_rejoins(cluster: Cluster, webui: WebUI) -> None:
    old = _worker_ids(cluster)
    fault_at = time.monotonic()
    _docker("restart", cluster.worker)
    _recovered(cluster, webui, "worker_host_restarted", fault_at, old)


@pytest.mark.destructive(order=22)
def test_killed_vllm_server_comes_back(cluster: Cluster, webui: WebUI) -> None:
    _worker_ids(cluster)
    pattern = f"^{LAB_VENV}/bin/python -m vllm.entrypoints.openai.api_server"
    server = cluster.pid(cluster.head, pattern)
    assert server, "no vLLM server runs on the head"
    fault_at = time.monotonic()
    _exec(cluster.head, f"kill -KILL {server}")
    # Served again by a new process (not a reply that was already on its way).
    _wait("vLLM: the killed server gone", lambda: cluster.pid(cluster.head, pattern) != server, limit=60)
    _recovered(cluster, webui, "vllm_killed", fault_at, [])


@pytest.mark.destructive(order=23)
def test_killed_vllm_supervisor_comes_back(cluster: Cluster, webui: WebUI) -> None:
    """The supervisor r1deploy adds is the unit's main process: killed, systemd starts it (and vLLM) again."""
    _worker_ids(cluster)
    supervisor = int(_exec(cluster.head, "systemctl show vllm -p MainPID --value").stdout.strip() or 0)
    assert supervisor
    fault_at = time.monotonic()
    _exec(cluster.head, f"kill -KILL {supervisor}")
    _wait(
        "vLLM: a new supervisor",
        lambda: (
            int(_exec(cluster.head, "systemctl show vllm -p MainPID --value").stdout.strip() or 0)
            not in (0, supervisor)
        ),
        limit=120,
    )
    _recovered(cluster, webui, "vllm_supervisor_killed", fault_at, [])


@pytest.mark.destructive(order=24)
def test_restarted_head_host_serves_and_the_worker_rejoins(cluster: Cluster, webui: WebUI) -> None:
    old = _worker_ids(cluster)
    fault_at = time.monotonic()
    _docker("restart", cluster.head)
    _recovered(cluster, webui, "head_host_restarted", fault_at, old)
    # The units came back by themselves, enabled at boot, with no failed unit left behind.
    failed = _exec(cluster.head, "systemctl list-units --failed --no-legend --plain").stdout.strip()
    assert failed == "", failed
