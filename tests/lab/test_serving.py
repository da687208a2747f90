"""The serving core in the lab: Ray cluster, model fan-out, vLLM over the OpenAI API, idempotence.

Runs against the lab deployed once per session by the `deployed_lab` fixture (deploy.yml over SSH into
systemd containers; vLLM's CPU build serving the generated R1-style model).
"""

from __future__ import annotations

import json

import pytest

from tests.lab.deployed import LAB_RAY_PORT, LAB_SERVICE_USER, LAB_VENV
from tests.lab.helpers import on_host, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.deployed]


def test_first_deploy_succeeded(deployed_lab) -> None:
    run = deployed_lab.first_run
    assert run.rc == 0, run.output[-8000:]
    assert run.total("failed") == 0 and run.total("unreachable") == 0


def test_ray_cluster_has_every_gpu_node(deployed_lab) -> None:
    head, head_ip = next(iter(deployed_lab.groups["ray_head"].items()))
    out = on_host(
        deployed_lab.inventory,
        head,
        f"sudo -u {LAB_SERVICE_USER} {LAB_VENV}/bin/python /opt/r1deploy/bin/r1deploy-ray-wait "
        f"--address {head_ip}:{LAB_RAY_PORT} --timeout 30",
    )
    cluster = json.loads(out.strip().splitlines()[-1])
    assert sorted(cluster["nodes"]) == sorted(deployed_lab.groups["gpu_nodes"].values())


def test_model_is_identical_on_every_node(deployed_lab) -> None:
    digests = {
        host: on_host(
            deployed_lab.inventory,
            host,
            "cd /srv/models/r1-tiny && sha256sum model.safetensors tokenizer.json",
        )
        for host in deployed_lab.groups["gpu_nodes"]
    }
    assert len(set(digests.values())) == 1, digests


def test_openai_client_streams_a_chat_with_the_reasoning_split(deployed_lab) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=deployed_lab.vllm_url + "/v1", api_key=deployed_lab.api_key, timeout=120)
    assert [m.id for m in client.models.list().data] == ["r1-tiny"]
    reasoning, content = "", ""
    stream = client.chat.completions.create(
        model="r1-tiny",
        messages=[{"role": "user", "content": "Hello! What can you do?"}],
        stream=True,
        temperature=0,
        max_tokens=64,
    )
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
    assert reasoning.strip() == "Reasoning: greet politely, keep it short;"
    assert content.strip() == "Hello from r1deploy! This lab model runs on vLLM."


def test_api_refuses_requests_without_the_key(deployed_lab) -> None:
    httpx = pytest.importorskip("httpx")
    response = httpx.get(deployed_lab.vllm_url + "/v1/models", timeout=30)
    assert response.status_code == 401


def test_api_key_is_not_in_process_lists_or_units(deployed_lab) -> None:
    head = next(iter(deployed_lab.groups["ray_head"]))
    processes = on_host(deployed_lab.inventory, head, "ps -eo args")
    units = on_host(
        deployed_lab.inventory, head, "cat /etc/systemd/system/vllm.service /etc/r1deploy/vllm.env"
    )
    assert deployed_lab.api_key not in processes
    assert deployed_lab.api_key not in units
    mode = on_host(deployed_lab.inventory, head, "stat -c '%a %U' /etc/r1deploy/vllm-secrets.env")
    assert mode.strip() == "600 root"


def _ray_status(inventory, host: str, address: str, prefix: str) -> tuple[int, str]:
    """`ray status` on a member host with the given environment/user prefix: (exit code, output)."""
    out = on_host(
        inventory,
        host,
        f"{prefix} timeout 60 {LAB_VENV}/bin/ray status --address {address}"
        " > /tmp/ray-status.out 2>&1; echo rc=$?; tail -c 1500 /tmp/ray-status.out; rm /tmp/ray-status.out",
    )
    first, _, rest = out.partition("\n")
    return int(first.removeprefix("rc=")), rest


def test_ray_refuses_clients_without_the_token(deployed_lab) -> None:
    """On a member host: no token or a wrong one is refused; the service user's token works."""
    worker = next(iter(deployed_lab.groups["ray_workers"]))
    head_ip = next(iter(deployed_lab.groups["ray_head"].values()))
    address = f"{head_ip}:{LAB_RAY_PORT}"
    # root has no token file; RAY_AUTH_MODE unset is what a stranger's client sends.
    no_token, no_token_out = _ray_status(
        deployed_lab.inventory, worker, address, "env -u RAY_AUTH_MODE HOME=/root"
    )
    wrong, wrong_out = _ray_status(
        deployed_lab.inventory,
        worker,
        address,
        "printf 0123456789abcdef0123456789abcdef > /tmp/wrong-token &&"
        " RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/wrong-token",
    )
    good, good_out = _ray_status(
        deployed_lab.inventory,
        worker,
        address,
        f"sudo -u {LAB_SERVICE_USER} env RAY_AUTH_MODE=token"
        " RAY_AUTH_TOKEN_PATH=/etc/r1deploy/ray-auth-token",
    )
    print(f"no token: rc {no_token}: {no_token_out[-300:]}\nwrong token: rc {wrong}: {wrong_out[-300:]}")
    assert good == 0, good_out
    assert "Active:" in good_out
    assert no_token != 0 and "Active:" not in no_token_out
    assert wrong != 0 and "Active:" not in wrong_out
    assert any(w in (no_token_out + wrong_out).lower() for w in ("auth", "unauthenticated", "token"))


def test_ray_token_is_private_to_the_service_user(deployed_lab) -> None:
    for host in deployed_lab.groups["gpu_nodes"]:
        mode = on_host(deployed_lab.inventory, host, "stat -c '%a %U' /etc/r1deploy/ray-auth-token")
        assert mode.strip() == f"600 {LAB_SERVICE_USER}", host
        env = on_host(deployed_lab.inventory, host, "cat /etc/r1deploy/ray.env")
        assert "RAY_AUTH_MODE=token" in env and "RAY_AUTH_TOKEN_PATH=/etc/r1deploy/ray-auth-token" in env
    token = (deployed_lab.inventory / "credentials" / "ray_auth_token").read_text().strip()
    head = next(iter(deployed_lab.groups["ray_head"]))
    assert token not in on_host(deployed_lab.inventory, head, "ps -eo args")


# Every TCP port a GPU host listens on outside loopback, as the roles' READMEs list them: the
# pinned Ray ports, Ray's fixed metrics ports on the head (autoscaler 44217, dashboard 44227), vLLM's
# API; plus Ray's worker range and vLLM's process-group (gloo/NCCL) listeners, which take free
# ephemeral ports on the node address and cannot be pinned.
NODE_EXPORTER = 9100  # roles/node_exporter, on every host (the cluster address only)
RAY_PORTS = {6700, 6701, 6702, 6703, 6704, 6705, NODE_EXPORTER}
HEAD_PORTS = RAY_PORTS | {LAB_RAY_PORT, 8000, 44217, 44227}
EPHEMERAL = range(32768, 61000)


def _listening(inventory, host: str) -> dict[int, str]:
    out = on_host(inventory, host, "ss -Hltnp")
    ports: dict[int, str] = {}
    for line in out.splitlines():
        fields = line.split()
        local = fields[3]
        addr, _, port = local.rpartition(":")
        if addr.strip("[]") in ("127.0.0.1", "::1") or addr.startswith("127."):
            continue
        ports[int(port)] = fields[-1] if len(fields) > 5 else ""
    return ports


def _allowed(port: int, who: str, pinned: set[int]) -> bool:
    if port in pinned | {22} or 10002 <= port <= 10257:
        return True
    # vLLM's process groups (its worker process is named VLLM::Worker) on ephemeral ports.
    return port in EPHEMERAL and "VLLM::" in who


def test_gpu_hosts_listen_only_on_the_documented_ports(deployed_lab) -> None:
    """No Ray Client (10001), no random ports: the pinned set, Ray's worker range, SSH."""
    for group, expected in (("ray_head", HEAD_PORTS), ("ray_workers", RAY_PORTS)):
        for host in deployed_lab.groups[group]:
            ports = _listening(deployed_lab.inventory, host)
            print(host, sorted(ports))
            assert 10001 not in ports, f"{host}: Ray Client's server listens: {ports[10001]}"
            unexpected = {p: who for p, who in ports.items() if not _allowed(p, who, expected)}
            assert not unexpected, f"{host} listens on undocumented ports: {unexpected}"
            assert expected <= set(ports), f"{host}: expected {sorted(expected - set(ports))} to listen"


@pytest.mark.parametrize(
    ("group", "unit"),
    [("ray_head", "ray-head.service"), ("ray_workers", "ray-worker.service"), ("ray_head", "vllm.service")],
)
def test_units_run_unprivileged_and_hardened(deployed_lab, group: str, unit: str) -> None:
    host = next(iter(deployed_lab.groups[group]))
    props = dict(
        line.split("=", 1)
        for line in on_host(
            deployed_lab.inventory,
            host,
            f"systemctl show {unit} -p User,NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,"
            "ProtectKernelTunables,ProtectKernelModules,ProtectControlGroups,RestrictSUIDSGID,"
            "CapabilityBoundingSet,DevicePolicy,ActiveState",
        ).splitlines()
    )
    assert props["ActiveState"] == "active"
    assert props["User"] == LAB_SERVICE_USER
    assert props["NoNewPrivileges"] == props["RestrictSUIDSGID"] == props["PrivateTmp"] == "yes"
    assert (props["ProtectSystem"], props["ProtectHome"]) == ("strict", "yes")
    assert (
        props["ProtectKernelTunables"]
        == props["ProtectKernelModules"]
        == props["ProtectControlGroups"]
        == "yes"
    )
    assert props["CapabilityBoundingSet"] == ""
    # The GPUs stay reachable: no device allow-list was implied by the hardening.
    assert props["DevicePolicy"] == "auto"
    uids = on_host(
        deployed_lab.inventory,
        host,
        f"ps -eo unit=,user= | awk '$1 == \"{unit}\" {{print $2}}' | sort -u",
    )
    assert uids.split() == [LAB_SERVICE_USER], uids
    exposure = on_host(deployed_lab.inventory, host, f"systemd-analyze security {unit} 2>&1 | tail -1")
    print(f"{host} {unit}: {exposure.strip()}")


@pytest.mark.parametrize(
    ("group", "unit"),
    [("ray_head", "ray-head.service"), ("ray_workers", "ray-worker.service"), ("ray_head", "vllm.service")],
)
def test_units_pass_systemd_analyze_verify(deployed_lab, group: str, unit: str) -> None:
    host = next(iter(deployed_lab.groups[group]))
    # Unknown keys only warn (exit 0): any output at all is a finding.
    out = on_host(deployed_lab.inventory, host, f"systemd-analyze verify /etc/systemd/system/{unit} 2>&1")
    assert out.strip() == ""


# The second run of deploy.yml (changed=0 on every host) is tests/lab/test_cli.py's rerun through the
# CLI: the same playbook through ansible-runner, so the lab pays for one no-op run, not two.


def test_check_diff_on_a_deployed_lab_changes_nothing(deployed_lab) -> None:
    run = run_playbook(deployed_lab.inventory, "deploy.yml", "--check", "--diff")
    assert run.rc == 0, run.output[-8000:]
    assert run.total("failed") == 0
    assert run.total("changed") == 0, run.changed_tasks()
