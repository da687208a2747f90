"""The lab's generated inventory: same group shape as the sample, host keys checked, mirrors set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from r1deploy.lab import inventory
from r1deploy.lab.lab import run_args, specs
from r1deploy.lab.model import Host, LabInfo, Network
from r1deploy.lab.paths import LabError, validate_name

REPO = Path(__file__).resolve().parents[2]


def _info(tmp_path: Path, workers: int = 1, model_dir: Path | None = None) -> LabInfo:
    hosts = [Host("lab-head", "ray_head", "172.30.0.2")]
    hosts += [Host(f"lab-worker{i}", "ray_workers", f"172.30.0.{2 + i}") for i in range(1, workers + 1)]
    hosts.append(Host("lab-frontend", "frontend", "172.30.0.9", public_ip="172.31.0.2"))
    return LabInfo(
        name="lab",
        root=tmp_path,
        inventory_dir=tmp_path / "inventories" / "lab",
        hosts=hosts,
        cluster=Network("lab-cluster", "172.30.0.0/16", "172.30.0.1", "br-aaaa"),
        public=Network("lab-public", "172.31.0.0/16", "172.31.0.1", "br-bbbb"),
        image="r1deploy-lab-host:0123",
        ssh_key=tmp_path / "inventories/lab/credentials/lab_ssh_ed25519",
        known_hosts=tmp_path / "inventories/lab/credentials/lab_known_hosts",
        apt_mirror_url="http://172.30.0.1:3142/deb.debian.org/debian",
        apt_security_mirror_url="http://172.30.0.1:3142/deb.debian.org/debian-security",
        pip_find_links="http://172.30.0.1:3143/",
        model_dir=model_dir,
    )


def _shape(node: object) -> object:
    """Group structure only (children and which groups have hosts), not the host names."""
    if not isinstance(node, dict):
        return None
    out = {}
    for key, value in node.items():
        if key == "children":
            out[key] = {k: _shape(v) for k, v in value.items()}
        elif key == "hosts":
            out[key] = True
    return out


def test_hosts_document_has_the_sample_inventorys_groups(tmp_path: Path) -> None:
    sample = yaml.safe_load((REPO / "inventories/sample/hosts.yml").read_text())
    rendered = inventory.hosts_document(_info(tmp_path).hosts)
    assert _shape(rendered) == _shape(sample)


def test_every_host_uses_its_cluster_address_for_ansible_and_ray(tmp_path: Path) -> None:
    doc = inventory.hosts_document(_info(tmp_path, workers=2).hosts)
    gpu = doc["all"]["children"]["gpu_nodes"]["children"]
    assert gpu["ray_head"]["hosts"] == {
        "lab-head": {"ansible_host": "172.30.0.2", "r1deploy_node_ip": "172.30.0.2"}
    }
    assert sorted(gpu["ray_workers"]["hosts"]) == ["lab-worker1", "lab-worker2"]
    # The frontend is reached on the cluster network too (its public address is for browsers).
    assert doc["all"]["children"]["frontend"]["hosts"]["lab-frontend"]["ansible_host"] == "172.30.0.9"
    # ...which the inventory names without needing facts (the chat URL in `deploy`'s closing block).
    assert (
        doc["all"]["children"]["frontend"]["hosts"]["lab-frontend"]["r1deploy_lab_public_ip"] == "172.31.0.2"
    )


def test_zero_workers_leaves_an_empty_ray_workers_group(tmp_path: Path) -> None:
    doc = inventory.hosts_document(_info(tmp_path, workers=0).hosts)
    assert doc["all"]["children"]["gpu_nodes"]["children"]["ray_workers"] == {}


def test_lab_vars_keep_host_key_checking_on_and_point_at_the_mirrors(tmp_path: Path) -> None:
    info = _info(tmp_path, model_dir=tmp_path / "models/r1-tiny")
    data = inventory.lab_vars(info, tmp_path / "cp")
    args = data["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={info.known_hosts}" in args
    assert "StrictHostKeyChecking=yes" in args
    assert "StrictHostKeyChecking=no" not in args
    assert data["ansible_ssh_private_key_file"] == str(info.ssh_key)
    assert data["r1deploy_apt_mirror_url"] == "http://172.30.0.1:3142/deb.debian.org/debian"
    assert data["r1deploy_apt_security_mirror_url"].endswith("/deb.debian.org/debian-security")
    assert data["r1deploy_pip_find_links"] == "http://172.30.0.1:3143/"
    assert data["r1deploy_pip_offline"] is True
    assert data["r1deploy_lab_model_dir"] == str(tmp_path / "models/r1-tiny")


def test_model_dir_is_absent_without_a_tiny_model(tmp_path: Path) -> None:
    assert "r1deploy_lab_model_dir" not in inventory.lab_vars(_info(tmp_path), tmp_path / "cp")


def test_write_copies_the_committed_lab_vars_but_never_overwrites_lab_yml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "serving.yml").write_text("r1deploy_vllm_dtype: float32\n")
    (shipped / "lab.yml").write_text("ansible_user: root\n")
    (shipped / "README.md").write_text("not a vars file\n")
    monkeypatch.setattr(inventory, "VARS_DIR", shipped)
    info = _info(tmp_path)
    written = inventory.write(info, tmp_path / "cp")
    all_vars = info.inventory_dir / "group_vars" / "all"
    assert sorted(p.name for p in all_vars.iterdir()) == ["lab.yml", "serving.yml"]
    assert yaml.safe_load((all_vars / "lab.yml").read_text())["ansible_user"] == "ansible"
    assert (all_vars / "serving.yml").read_text() == "r1deploy_vllm_dtype: float32\n"
    assert set(written) == {info.inventory_dir / "hosts.yml", all_vars / "lab.yml", all_vars / "serving.yml"}
    assert yaml.safe_load((info.inventory_dir / "hosts.yml").read_text()) == inventory.hosts_document(
        info.hosts
    )


@pytest.mark.parametrize("name", ["lab", "lab-serving", "lab2", "lab-a-b-c"])
def test_lab_names_that_stay_git_ignored_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "sample", "mylab", "lab_x", "Lab", "lab/../x", "lab" + "x" * 21])
def test_other_lab_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(LabError, match="start with 'lab'"):
        validate_name(name)


def test_gpu_hosts_get_shared_memory_and_every_host_boots_systemd() -> None:
    shape = specs("lab", 2)
    assert [(s.name, s.group) for s in shape] == [
        ("lab-head", "ray_head"),
        ("lab-worker1", "ray_workers"),
        ("lab-worker2", "ray_workers"),
        ("lab-frontend", "frontend"),
    ]
    head = run_args(shape[0], "lab", "img:1")
    front = run_args(shape[-1], "lab", "img:1")
    for args in (head, front):
        assert {"--privileged", "--cgroupns=host", "/sys/fs/cgroup:/sys/fs/cgroup:rw"} <= set(args)
        assert args[args.index("--network") + 1] == "lab-cluster"
        assert "r1deploy.lab=lab" in args
        assert args[-1] == "img:1"
    assert head[head.index("--shm-size") + 1] == "2g"
    assert "--shm-size" not in front
