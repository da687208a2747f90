"""`lab down` removes exactly what its lab made: label-matched containers/networks, its own files."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from r1deploy.lab import lab as lab_module
from r1deploy.lab import mirrors, netfilter
from r1deploy.lab.lab import Lab, owned


class FakeDocker:
    """The docker CLI boundary: a few objects with labels, and a log of mutating calls."""

    binary = "docker"

    def __init__(self, containers: dict[str, str], networks: dict[str, str]) -> None:
        self.containers = dict(containers)  # name -> r1deploy.lab label ("" when unlabelled)
        self.networks = dict(networks)
        self.calls: list[list[str]] = []

    def run(
        self,
        args: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        args = list(args)
        self.calls.append(args)
        out = ""
        if args[:2] == ["ps", "-a"]:
            out = "".join(f"{n}\t{lab}\n" for n, lab in self.containers.items())
        elif args[:2] == ["network", "ls"]:
            out = "".join(f"{n}\t{lab}\n" for n, lab in self.networks.items())
        elif args[0] == "rm":
            for name in args[1:]:
                if not name.startswith("-"):
                    del self.containers[name]
        elif args[:2] == ["network", "rm"]:
            del self.networks[args[2]]
        return subprocess.CompletedProcess(args, 0, out, "")

    def ok(self, args: Sequence[str], timeout: float | None = None) -> bool:
        return self.run(args).returncode == 0

    def mutations(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] == "rm" or c[:2] == ["network", "rm"]]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R1DEPLOY_LAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(netfilter, "remove_drops", lambda lab: 0)
    (tmp_path / "roles").mkdir()
    (tmp_path / "inventories").mkdir()
    return tmp_path


def test_owned_matches_the_label_exactly_never_by_prefix() -> None:
    rows = "lab-head\tlab\nlab2-head\tlab2\nlab-x\tlab-x\nlab-stray\t\nother\tlab\n"
    assert owned(rows, "lab") == ["lab-head", "other"]
    assert owned(rows, "lab2") == ["lab2-head"]
    assert owned("", "lab") == []


def test_down_removes_its_containers_and_networks_and_nothing_else(root: Path) -> None:
    docker = FakeDocker(
        containers={
            "lab-head": "lab",
            "lab-worker1": "lab",
            "lab-frontend": "lab",
            "lab2-head": "lab2",  # another engineer's lab, same prefix
            "lab-manual": "",  # someone's container that only looks like ours
        },
        networks={"lab-cluster": "lab", "lab-public": "lab", "lab2-cluster": "lab2", "bridge": ""},
    )
    removed = Lab("lab", root=root, docker=docker, log=lambda _: None).down()  # type: ignore[arg-type]
    assert docker.mutations() == [
        ["rm", "-f", "-v", "lab-head", "lab-worker1", "lab-frontend"],
        ["network", "rm", "lab-cluster"],
        ["network", "rm", "lab-public"],
    ]
    assert docker.containers == {"lab2-head": "lab2", "lab-manual": ""}
    assert docker.networks == {"lab2-cluster": "lab2", "bridge": ""}
    assert "container lab-head" in removed and "network lab-public" in removed


def test_down_of_a_lab_that_is_not_there_changes_nothing(root: Path) -> None:
    docker = FakeDocker(containers={"lab2-head": "lab2"}, networks={"lab2-cluster": "lab2"})
    assert Lab("lab", root=root, docker=docker, log=lambda _: None).down() == []  # type: ignore[arg-type]
    assert docker.mutations() == []


def test_down_deletes_the_generated_files_but_keeps_role_secrets_and_other_labs(root: Path) -> None:
    lab = Lab("lab", root=root, docker=FakeDocker({}, {}), log=lambda _: None)  # type: ignore[arg-type]
    inv = root / "inventories" / "lab"
    generated = [
        inv / "hosts.yml",
        inv / "group_vars/all/lab.yml",
        inv / "group_vars/all/serving.yml",
        inv / "credentials/lab_ssh_ed25519",
        inv / "credentials/lab_ssh_ed25519.pub",
        inv / "credentials/lab_known_hosts",
    ]
    for path in generated:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    secret = inv / "credentials" / "vllm_api_key"  # made by a role, not by the lab
    secret.write_text("s3cret")
    other = root / "inventories" / "lab2" / "hosts.yml"
    other.parent.mkdir(parents=True)
    other.write_text("x")
    outside = root / "notes.txt"
    outside.write_text("x")
    # A manifest that (wrongly) names a path outside the inventory must not make down delete it.
    lab.state.mkdir(parents=True)
    lab.manifest.write_text(json.dumps([str(p) for p in generated] + [str(outside)]))

    lab.down()

    assert not any(p.exists() for p in generated)
    assert secret.read_text() == "s3cret"
    assert other.exists() and outside.exists()
    assert not (inv / "group_vars").exists()  # emptied folders go, the one holding a secret stays
    assert (inv / "credentials").is_dir()
    assert not lab.state.exists()


def test_down_stops_only_mirror_processes_it_started(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab("lab", root=root, docker=FakeDocker({}, {}), log=lambda _: None)  # type: ignore[arg-type]
    stopped: list[Path] = []
    monkeypatch.setattr(lab_module.mirrors, "stop", lambda state: stopped.append(state) or ["apt mirror"])
    assert "apt mirror" in lab.down()
    assert stopped == [root / "state" / "labs" / "lab"]
    assert mirrors.stop is not None


def test_firewall_rules_of_other_labs_are_left_alone() -> None:
    listing = "\n".join(
        [
            "-N DOCKER-USER",
            '-A DOCKER-USER -i br-1 -o eth0 -m comment --comment "r1deploy-lab:lab" -j DROP',
            "-A DOCKER-USER -i br-2 -o eth0 -m comment --comment r1deploy-lab:lab2 -j DROP",
            "-A DOCKER-USER -i br-3 -o eth0 -m comment --comment r1deploy-lab:lab -j DROP",
            "-A DOCKER-USER -j RETURN",
        ]
    )
    rules = netfilter.own_rules(listing, "lab")
    assert [r[1] for r in rules] == ["br-1", "br-3"]
    # The spec handed to `iptables -D` must match the rule as inserted (no quote characters).
    assert rules[0] == netfilter.rule("br-1", "eth0", "lab")
    assert netfilter.rule("br-1", "eth0", "lab")[-2:] == ["-j", "DROP"]
