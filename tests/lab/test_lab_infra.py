"""The lab itself: systemd hosts reachable over SSH with checked host keys, isolated networks, working
offline mirrors, and a `lab down` that leaves nothing of its lab behind (and touches no other lab)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from r1deploy.lab import Lab, LabInfo
from r1deploy.lab.mirrors import APT_PORT, PIP_PORT

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"
Runner = Callable[..., subprocess.CompletedProcess[str]]


def docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True, timeout=120).stdout


# apt-get reads only a sources list naming the lab's mirror; the host's own sources stay as they are
# (configuring them is the base_os role's job).
APT_OPTS = "-o Dir::Etc::SourceList=/tmp/r1lab-mirror.list -o Dir::Etc::SourceParts=/nonexistent"


def write_mirror_list(info: LabInfo, lab_exec: Runner, host: str) -> None:
    lines = (
        f"deb {info.apt_mirror_url} bookworm main contrib non-free non-free-firmware\n"
        f"deb {info.apt_security_mirror_url} bookworm-security main\n"
    )
    lab_exec(host, "sh", "-c", f"printf '{lines}' > /tmp/r1lab-mirror.list")


def test_three_hosts_run_with_their_own_hostnames(lab: LabInfo, lab_exec: Runner) -> None:
    assert [h.group for h in lab.hosts] == ["ray_head", "ray_workers", "frontend"]
    assert all(h.state == "running" for h in lab.hosts)
    for host in lab.hosts:
        assert lab_exec(host.name, "hostname").stdout.strip() == host.name
        assert host.cluster_ip.startswith(lab.cluster.subnet.rsplit(".", 2)[0])
    assert lab.frontend.public_ip and lab.head.public_ip is None


def test_inventory_resolves_to_the_lab_hosts(lab: LabInfo) -> None:
    out = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(lab.inventory_dir), "--list"],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    hostvars = data["_meta"]["hostvars"]
    assert data["ray_head"]["hosts"] == [lab.head.name]
    assert data["ray_workers"]["hosts"] == [w.name for w in lab.workers]
    assert data["frontend"]["hosts"] == [lab.frontend.name]
    assert sorted(data["gpu_nodes"]["children"]) == ["ray_head", "ray_workers"]
    for host in lab.hosts:
        assert hostvars[host.name]["r1deploy_node_ip"] == host.cluster_ip
        assert hostvars[host.name]["r1deploy_pip_find_links"] == lab.pip_find_links
    assert oct(lab.ssh_key.stat().st_mode & 0o777) == "0o600"


def test_ansible_pings_every_host_over_ssh_with_host_keys_checked(lab: LabInfo, lab_ansible: Runner) -> None:
    proc = lab_ansible("all", "-m", "ansible.builtin.ping", "-o")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in lab.hosts:
        assert f"{host.name} | SUCCESS" in proc.stdout


def test_an_unknown_host_key_is_refused(lab: LabInfo, lab_ansible: Runner, tmp_path: Path) -> None:
    # Proves checking is really on: the same inventory with an empty known_hosts file must fail.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    override = f"-o UserKnownHostsFile={empty} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    proc = lab_ansible(
        lab.head.name,
        "-m",
        "ansible.builtin.ping",
        "-e",
        json.dumps({"ansible_ssh_common_args": override, "ansible_control_path_dir": str(tmp_path / "cp")}),
    )
    assert proc.returncode != 0
    assert "Host key verification failed" in proc.stdout + proc.stderr


def test_systemd_is_running_on_every_host(lab: LabInfo, lab_exec: Runner) -> None:
    for host in lab.hosts:
        state = lab_exec(host.name, "systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        failed = lab_exec(host.name, "systemctl", "--failed", "--no-legend", "--plain", check=False).stdout
        assert state == "running", f"{host.name} is {state!r}; failed units:\n{failed}"


def test_lab_networks_are_internal_and_walled_off_from_the_uplink(lab: LabInfo) -> None:
    # Checked on the configuration, not by sending packets: tests never send traffic off the lab.
    rules = subprocess.run(["iptables", "-w", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    for net in (lab.cluster, lab.public):
        assert net is not None
        assert docker("network", "inspect", "-f", "{{.Internal}}", net.name).strip() == "true"
        assert any(
            f"-i {net.bridge} " in rule and f"r1deploy-lab:{lab.name}" in rule and rule.endswith("-j DROP")
            for rule in rules.splitlines()
        ), rules


def test_a_container_on_public_only_cannot_reach_the_cluster(lab: LabInfo) -> None:
    probe = (
        "import json, socket\n"
        "def reach(ip):\n"
        "    try:\n"
        "        socket.create_connection((ip, 22), timeout=3).close()\n"
        "        return 'open'\n"
        "    except OSError as exc:\n"
        "        return type(exc).__name__ + ': ' + str(exc)\n"
        f"print(json.dumps({{'head': reach('{lab.head.cluster_ip}'), "
        f"'frontend': reach('{lab.frontend.public_ip}')}}))\n"
    )
    out = docker(
        "run", "--rm", "--network", f"{lab.name}-public", "--label", f"r1deploy.lab={lab.name}",
        lab.image, "python3", "-c", probe,
    )  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert result["frontend"] == "open", result  # the probe itself can connect on its own network
    assert result["head"] != "open", result


@pytest.mark.parametrize("which", ["head", "frontend"])
def test_apt_mirror_installs_a_package(lab: LabInfo, lab_exec: Runner, which: str) -> None:
    host = lab.head.name if which == "head" else lab.frontend.name
    write_mirror_list(lab, lab_exec, host)
    opts = APT_OPTS
    lab_exec(host, "sh", "-c", f"apt-get {opts} update -qq")
    install = f"DEBIAN_FRONTEND=noninteractive apt-get {opts} install -y -qq --reinstall hello"
    lab_exec(host, "sh", "-c", install)
    assert lab_exec(host, "hello").stdout.strip() == "Hello, world!"


def test_pip_mirror_serves_the_locked_wheels(lab: LabInfo, lab_exec: Runner) -> None:
    host = lab.workers[0].name if lab.workers else lab.head.name
    write_mirror_list(lab, lab_exec, host)
    opts = APT_OPTS
    lab_exec(host, "sh", "-c", f"apt-get {opts} update -qq")
    lab_exec(
        host,
        "sh",
        "-c",
        f"DEBIAN_FRONTEND=noninteractive apt-get {opts} install -y -qq --no-install-recommends python3-pip",
    )
    gateway = lab.cluster.gateway
    pip = (
        f"pip3 download --no-deps --no-index --find-links {lab.pip_find_links} --trusted-host {gateway} "
        "-d /tmp/r1lab-wheels"
    )
    try:
        # torch's local version (+cpu, quoted as %2B in the listing) is what the serving venv needs.
        lab_exec(host, "sh", "-c", f"{pip} idna==3.20 torch==2.13.0+cpu", timeout=600)
        listing = lab_exec(host, "sh", "-c", "cd /tmp/r1lab-wheels && sha256sum *.whl").stdout
    finally:
        lab_exec(host, "rm", "-rf", "/tmp/r1lab-wheels", check=False)
    served = {line.split()[1]: line.split()[0] for line in listing.splitlines()}
    wheelhouse = _wheelhouse_dir(lab)
    torch = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert sorted(served) == ["idna-3.20-py3-none-any.whl", torch]
    idna = wheelhouse / "idna-3.20-py3-none-any.whl"
    assert served[idna.name] == hashlib.sha256(idna.read_bytes()).hexdigest()


def _wheelhouse_dir(lab: LabInfo) -> Path:
    """The folder the lab's pip mirror serves (from the server's own command line)."""
    from r1deploy.lab import mirrors, procs
    from r1deploy.lab.paths import lab_state_dir

    pid = mirrors.running(lab_state_dir(lab.name))["pip"]
    assert pid is not None, "pip mirror is not running"
    argv = procs.cmdline(pid)
    return Path(argv[argv.index("--directory") + 1])


def test_status_reports_hosts_addresses_and_mirrors(lab: LabInfo) -> None:
    proc = subprocess.run(
        [str(BIN / "r1deploy"), "lab", "status", "--json", "--name", lab.name],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["up"] is True
    assert {h["name"]: h["cluster_ip"] for h in data["hosts"]} == {h.name: h.cluster_ip for h in lab.hosts}
    assert data["apt_mirror_url"] == f"http://{lab.cluster.gateway}:{APT_PORT}/deb.debian.org/debian"
    assert data["pip_find_links"] == f"http://{lab.cluster.gateway}:{PIP_PORT}/"
    assert data["mirrors_running"] == {"apt": True, "pip": True}


def test_up_again_reuses_the_running_lab(lab: LabInfo) -> None:
    before = {h.name: docker("inspect", "-f", "{{.Id}} {{.State.StartedAt}}", h.name) for h in lab.hosts}
    again = Lab(lab.name, workers=len(lab.workers), root=REPO, log=lambda _: None).up()
    after = {h.name: docker("inspect", "-f", "{{.Id}} {{.State.StartedAt}}", h.name) for h in again.hosts}
    assert after == before
    assert [(h.name, h.cluster_ip) for h in again.hosts] == [(h.name, h.cluster_ip) for h in lab.hosts]
    lab_vars = yaml.safe_load((lab.inventory_dir / "group_vars/all/lab.yml").read_text())
    assert lab_vars["r1deploy_apt_mirror_url"] == lab.apt_mirror_url


def _listening(address: str, port: int) -> bool:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return any(line.split()[3] == f"{address}:{port}" for line in out.splitlines() if len(line.split()) > 3)


def test_down_leaves_nothing_of_its_lab_behind(lab: LabInfo) -> None:
    name = f"{lab.name}-down"[:23]
    r1 = [str(BIN / "r1deploy"), "lab"]
    up = subprocess.run(
        [*r1, "up", "--name", name, "--workers", "0"], cwd=REPO, capture_output=True, text=True, check=False
    )
    try:
        assert up.returncode == 0, up.stderr
        other = Lab(name, workers=0, root=REPO, log=lambda _: None).status()
        assert other is not None and len(other.hosts) == 2
        from r1deploy.lab import mirrors
        from r1deploy.lab.paths import lab_state_dir

        state = lab_state_dir(name)
        pids = [p for p in mirrors.running(state).values() if p]
        bridges = [other.cluster.bridge, other.public.bridge if other.public else ""]
        assert len(pids) == 2 and _listening(other.cluster.gateway, APT_PORT)

        # Reshaping adds a worker and keeps the hosts that are already up.
        head_id = docker("inspect", "-f", "{{.Id}}", other.head.name)
        grown = Lab(name, workers=1, root=REPO, log=lambda _: None).up()
        assert [h.group for h in grown.hosts] == ["ray_head", "ray_workers", "frontend"]
        assert docker("inspect", "-f", "{{.Id}}", other.head.name) == head_id
        assert f"{name}-worker1" in (REPO / "inventories" / name / "hosts.yml").read_text()
    finally:
        down = subprocess.run(
            [*r1, "down", "--name", name], cwd=REPO, capture_output=True, text=True, check=False
        )
    assert down.returncode == 0, down.stderr

    assert docker("ps", "-a", "-q", "--filter", f"label=r1deploy.lab={name}").strip() == ""
    assert docker("network", "ls", "-q", "--filter", f"label=r1deploy.lab={name}").strip() == ""
    for bridge in bridges:
        assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not _listening(other.cluster.gateway, APT_PORT) and not _listening(other.cluster.gateway, PIP_PORT)
    rules = subprocess.run(["iptables", "-w", "-S", "DOCKER-USER"], capture_output=True, text=True).stdout
    assert f"r1deploy-lab:{name}" not in rules
    assert not (REPO / "inventories" / name).exists()
    assert not other.ssh_key.exists() and not other.known_hosts.exists()
    assert not state.exists()

    # ... and the session's lab is untouched.
    still = Lab(lab.name, root=REPO, log=lambda _: None).status()
    assert still is not None and all(h.state == "running" for h in still.hosts)
    assert still.mirrors_running == {"apt": True, "pip": True}
    assert lab.known_hosts.exists()
