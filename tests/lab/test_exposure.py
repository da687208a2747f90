"""What a stranger can reach: every TCP port of every lab host, scanned from outside the inventory.

Two probe containers, made here from the lab's own image and removed afterwards: one on the lab's
public network (a user's machine) and one on the cluster network that is NOT in the inventory (a
curious neighbour on the building's LAN). Each scans ports 1-65535 of every lab address it can reach
(lab addresses only, checked before the scan). Expected with the firewall role's defaults:

- public side: the frontend's nginx (80, 443) and SSH, nothing else;
- cluster side, non-member: SSH on every host and nginx on the frontend; nothing of Ray or vLLM,
  although they listen on the cluster address (checked: the scan is not trivially empty);
- member to member: every port the other member listens on is reachable; the frontend reaches vLLM's
  API and nothing else of the head; vLLM refuses requests without the key; Open WebUI refuses
  anonymous use.

Figures (ports found per probe, scan times) go to test-artifacts/exposure.json.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.helpers import REPO

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

httpx = pytest.importorskip("httpx")

DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"
SCANNER = (Path(__file__).parent / "portscan.py").read_text()
ARTIFACTS = REPO / "test-artifacts"
PROBE_LABEL = "r1deploy.lab.probe"
SSH, HTTP, HTTPS, VLLM = 22, 80, 443, 8000
NODE_EXPORTER, RAY_METRICS = 9100, 6704  # scraped by Prometheus on the monitoring host (the frontend)


def docker(*args: str, timeout: float = 120, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [DOCKER, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])}... exited {proc.returncode}: {proc.stderr[-2000:]}"
        )
    return proc.stdout


@dataclass
class Probe:
    name: str
    network: str
    address: str

    def scan(self, targets: list[str], ports: str = "1-65535", timeout: float = 1.0) -> dict[str, dict]:
        out = docker(
            "exec",
            "-i",
            self.name,
            "python3",
            "-",
            "--ports",
            ports,
            "--timeout",
            str(timeout),
            *targets,
            stdin=SCANNER,
            timeout=600,
        )
        return json.loads(out.strip().splitlines()[-1])


def _start_probe(lab, side: str, network: str) -> Probe:
    """A container of the lab's image on one lab network; gone by itself after 15 minutes at most."""
    name = f"{lab.name}-probe-{side}-{uuid.uuid4().hex[:6]}"
    docker(
        "run", "-d", "--rm", "--name", name, "--hostname", name, "--label", f"{PROBE_LABEL}={lab.name}",
        "--network", network, "--entrypoint", "/bin/sleep", lab.image, "900",
    )  # fmt: skip
    address = docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name
    ).strip()
    return Probe(name, network, address)


@pytest.fixture(scope="module")
def probes(lab) -> Iterator[dict[str, Probe]]:
    assert lab.public is not None, "the lab has no public network"
    made: dict[str, Probe] = {}
    try:
        made["public"] = _start_probe(lab, "public", lab.public.name)
        made["cluster"] = _start_probe(lab, "cluster", lab.cluster.name)
        yield made
    finally:
        for probe in made.values():
            subprocess.run([DOCKER, "rm", "-f", probe.name], capture_output=True, timeout=60, check=False)


def _in_lab(lab, address: str) -> bool:
    nets = [lab.cluster.subnet] + ([lab.public.subnet] if lab.public else [])
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(n) for n in nets)


def _listening(lab_exec, host: str) -> set[int]:
    """TCP ports the host listens on beyond loopback (what a firewall has to protect)."""
    out = lab_exec(host, "ss", "-Hltn").stdout
    ports = set()
    for line in out.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        if address.strip("[]") not in ("127.0.0.1", "::1") and not address.startswith("127."):
            ports.add(int(port))
    return ports


@pytest.fixture(scope="module")
def exposure(lab, deployed_lab, probes, lab_exec) -> dict:
    """One full scan from each probe (every port, every host it can reach), kept for every test below."""
    hosts = {h.name: h for h in lab.hosts}
    cluster_targets = [h.cluster_ip for h in lab.hosts]
    public_targets = [h.public_ip for h in lab.hosts if h.public_ip]
    for address in cluster_targets + public_targets + [p.address for p in probes.values()]:
        assert _in_lab(lab, address), f"{address} is not a lab address: refusing to scan"
    for probe in probes.values():
        assert probe.address not in {h.cluster_ip for h in lab.hosts}
        assert probe.address not in {ip for g in deployed_lab.groups.values() for ip in g.values()}
    started = time.monotonic()
    result = {
        "public": probes["public"].scan(public_targets),
        "cluster": probes["cluster"].scan(cluster_targets),
        "listening": {name: sorted(_listening(lab_exec, name)) for name in hosts},
        "probes": {side: p.address for side, p in probes.items()},
    }
    result["scan_seconds"] = round(time.monotonic() - started, 1)
    by_ip = {h.cluster_ip: h.name for h in lab.hosts} | {
        h.public_ip: h.name for h in lab.hosts if h.public_ip
    }
    summary = {
        side: {f"{by_ip[ip]} ({ip})": found["open"] for ip, found in result[side].items()}
        for side in ("public", "cluster")
    }
    result["summary"] = summary
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "exposure.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nexposure: {json.dumps(summary)} in {result['scan_seconds']} s")
    return result


def test_the_scan_covers_every_port_of_every_host(lab, exposure) -> None:
    for side, targets in (("public", [h.public_ip for h in lab.hosts if h.public_ip]), ("cluster", None)):
        expected = targets or [h.cluster_ip for h in lab.hosts]
        assert sorted(exposure[side]) == sorted(expected)
        for found in exposure[side].values():
            assert len(found["open"]) + found["refused"] + found["silent"] == 65535


def test_ray_and_vllm_listen_on_the_cluster_address(lab, exposure) -> None:
    """Control: the services a stranger must not reach do listen beyond loopback, so an empty scan
    result below is the firewall's doing, not an idle host."""
    head = exposure["listening"][lab.head.name]
    assert VLLM in head and len(set(head) - {SSH, VLLM}) >= 3, head
    for worker in lab.workers:
        assert len(set(exposure["listening"][worker.name]) - {SSH}) >= 3, exposure["listening"]


def test_public_side_reaches_only_nginx_and_ssh(lab, exposure) -> None:
    found = exposure["public"][lab.frontend.public_ip]
    assert found["open"] == [SSH, HTTP, HTTPS], found
    # reject, not drop: every other port answered at once
    assert found["silent"] == 0, found


def test_cluster_side_stranger_reaches_nothing_of_ray_or_vllm(lab, exposure) -> None:
    for host in lab.hosts:
        found = exposure["cluster"][host.cluster_ip]
        expected = [SSH, HTTP, HTTPS] if host.group == "frontend" else [SSH]
        assert found["open"] == expected, (host.name, found["open"], exposure["listening"][host.name])
        assert found["silent"] == 0, (host.name, found)


def _scan_from(lab_exec, host: str, target: str, ports: list[int]) -> list[int]:
    if not ports:
        return []
    proc = subprocess.run(
        [DOCKER, "exec", "-i", host, "python3", "-", "--ports", ",".join(map(str, ports)), target],
        input=SCANNER,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])[target]["open"]


def test_members_reach_every_port_of_each_other(lab, exposure, lab_exec) -> None:
    """Ray, NCCL/gloo and vLLM's internal ports stay open between the GPU hosts."""
    members = [lab.head, *lab.workers]
    for source in members:
        for target in members:
            if source is target:
                continue
            listening = exposure["listening"][target.name]
            assert _scan_from(lab_exec, source.name, target.cluster_ip, listening) == listening


def test_frontend_reaches_the_vllm_api_and_nothing_else_of_the_head(lab, exposure, lab_exec) -> None:
    """The frontend is also the lab's monitoring host: Prometheus scrapes node exporter and Ray's
    metrics port on the GPU hosts (firewall_monitoring_ports); nothing else of Ray is open to it."""
    listening = exposure["listening"][lab.head.name]
    allowed = sorted({SSH, VLLM, NODE_EXPORTER, RAY_METRICS} & set(listening))
    assert _scan_from(lab_exec, lab.frontend.name, lab.head.cluster_ip, listening) == allowed


def test_vllm_refuses_requests_without_the_key(lab, deployed_lab, lab_exec) -> None:
    """From an allowed source (the frontend): no key, a wrong key -> 401; the right key -> 200."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "def status(key):\n"
        "    req = urllib.request.Request(sys.argv[1] + '/v1/models')\n"
        "    if key: req.add_header('Authorization', 'Bearer ' + key)\n"
        "    try: return urllib.request.urlopen(req, timeout=30).status\n"
        "    except urllib.error.HTTPError as e: return e.code\n"
        "key = sys.stdin.readline().strip()\n"
        "print(status(''), status('not-the-key'), status(key))\n"
    )
    proc = subprocess.run(
        [DOCKER, "exec", "-i", lab.frontend.name, "python3", "-c", script, deployed_lab.vllm_url],
        input=deployed_lab.api_key + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.split() == ["401", "401", "200"], proc.stdout + proc.stderr


def test_open_webui_refuses_anonymous_use(lab, deployed_lab, lab_exec, tmp_path) -> None:
    cafile = tmp_path / "frontend.pem"
    cafile.write_text(lab_exec(lab.frontend.name, "cat", "/etc/nginx/r1deploy/tls/selfsigned.crt").stdout)
    verify = ssl.create_default_context(cafile=str(cafile))
    with httpx.Client(base_url=f"https://{lab.frontend.public_ip}", verify=verify, timeout=60) as c:
        anonymous = {
            "models": c.get("/api/models").status_code,
            "chats": c.get("/api/v1/chats/").status_code,
            "users": c.get("/api/v1/users/").status_code,
            "chat": c.post(
                "/api/chat/completions",
                json={"model": "r1-tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False},
            ).status_code,
            "forged_token": c.get(
                "/api/models", headers={"Authorization": "Bearer forged.jwt.token"}
            ).status_code,
        }
        email = f"stranger-{uuid.uuid4().hex[:6]}@r1deploy.lab"
        signup = c.post(
            "/api/v1/auths/signup", json={"name": "Stranger", "email": email, "password": uuid.uuid4().hex}
        )
        signin = c.post("/api/v1/auths/signin", json={"email": email, "password": "whatever"})
    assert all(code in (401, 403) for code in anonymous.values()), anonymous
    assert signup.status_code in (401, 403), signup.text  # self sign-up is off by default
    assert signin.status_code in (400, 401, 403), signin.text
