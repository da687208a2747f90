"""``Lab``: bring a multi-host systemd lab up, describe it, tear it down (only what it made)."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from r1deploy.lab import inventory, mirrors, netfilter, ssh
from r1deploy.lab.docker import Docker, ensure_engine
from r1deploy.lab.image import ensure_image
from r1deploy.lab.model import Host, LabInfo, Network
from r1deploy.lab.paths import (
    LabError,
    LabInputError,
    cache_dir,
    default_name,
    lab_state_dir,
    repo_root,
    validate_name,
)
from r1deploy.lab.wheelhouse import ensure_wheelhouse

LABEL = "r1deploy.lab"
GROUP_LABEL = "r1deploy.group"
MAX_WORKERS = 16
# Ray and vLLM keep their object store and shared tensors in /dev/shm (Docker's default is 64 MiB).
GPU_SHM = "2g"
SYSTEMD_RUN_ARGS = (
    "--privileged",
    "--cgroupns=host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
)


@dataclass(frozen=True)
class Spec:
    name: str
    group: str

    @property
    def gpu_node(self) -> bool:
        return self.group in ("ray_head", "ray_workers")


def fact_cache_files(cache: Path, host: str) -> list[Path]:
    """The jsonfile fact cache's files for ``host``: ``<host>`` (ansible-core < 2.19) and ``s<N>_<host>``
    (2.19 prefixes each key with its cache schema, ``s1_`` today)."""
    if not cache.is_dir():
        return []
    pattern = re.compile(rf"(s\d+_)?{re.escape(host)}")
    return sorted(p for p in cache.iterdir() if pattern.fullmatch(p.name))


def specs(lab: str, workers: int) -> list[Spec]:
    return [
        Spec(f"{lab}-head", "ray_head"),
        *(Spec(f"{lab}-worker{i}", "ray_workers") for i in range(1, workers + 1)),
        Spec(f"{lab}-frontend", "frontend"),
    ]


def run_args(spec: Spec, lab: str, image: str) -> list[str]:
    args = ["run", "-d", "--name", spec.name, "--hostname", spec.name]
    args += ["--label", f"{LABEL}={lab}", "--label", f"{GROUP_LABEL}={spec.group}"]
    args += ["--network", f"{lab}-cluster", *SYSTEMD_RUN_ARGS]
    if spec.gpu_node:
        args += ["--shm-size", GPU_SHM]
    return [*args, image]


def owned(rows: str, lab: str) -> list[str]:
    """Names from ``NAME<TAB>LABEL`` rows whose lab label is exactly ``lab`` (never a prefix match)."""
    names = []
    for row in rows.splitlines():
        name, _, label = row.partition("\t")
        if name and label.strip() == lab:
            names.append(name.strip())
    return names


def network_from_inspect(doc: dict[str, Any]) -> Network:
    ipam = (doc.get("IPAM") or {}).get("Config") or [{}]
    bridge = (doc.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{doc['Id'][:12]}"
    return Network(doc["Name"], ipam[0].get("Subnet", ""), ipam[0].get("Gateway", ""), bridge)


def host_from_inspect(doc: dict[str, Any], lab: str) -> Host:
    nets = doc["NetworkSettings"]["Networks"]
    cluster = nets.get(f"{lab}-cluster", {}).get("IPAddress", "")
    public = nets.get(f"{lab}-public", {}).get("IPAddress") or None
    return Host(
        name=doc["Name"].lstrip("/"),
        group=doc["Config"]["Labels"].get(GROUP_LABEL, ""),
        cluster_ip=cluster,
        public_ip=public,
        state=doc["State"]["Status"],
    )


def sort_hosts(hosts: list[Host]) -> list[Host]:
    order = {"ray_head": 0, "ray_workers": 1, "frontend": 2}

    def key(h: Host) -> tuple[int, int, str]:
        digits = "".join(c for c in h.name.rsplit("-", 1)[-1] if c.isdigit())
        return (order.get(h.group, 9), int(digits or 0), h.name)

    return sorted(hosts, key=key)


class Lab:
    """One named lab. ``up`` is idempotent; ``down`` removes only what carries this lab's label/paths."""

    def __init__(
        self,
        name: str | None = None,
        workers: int = 1,
        root: Path | None = None,
        docker: Docker | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.name = validate_name(name or default_name())
        if not 0 <= workers <= MAX_WORKERS:
            raise LabInputError(f"--workers must be between 0 and {MAX_WORKERS}, got {workers}")
        self.workers = workers
        self.root = root or repo_root()
        self._docker = docker
        self.log = log

    # -- paths -----------------------------------------------------------------------------------
    @property
    def docker(self) -> Docker:
        if self._docker is None:
            self._docker = Docker()
        return self._docker

    @property
    def inventory_dir(self) -> Path:
        return self.root / "inventories" / self.name

    @property
    def credentials_dir(self) -> Path:
        return self.inventory_dir / "credentials"

    @property
    def ssh_key(self) -> Path:
        return self.credentials_dir / "lab_ssh_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.credentials_dir / "lab_known_hosts"

    @property
    def state(self) -> Path:
        return lab_state_dir(self.name)

    @property
    def control_dir(self) -> Path:
        return self.state / "cp"

    @property
    def manifest(self) -> Path:
        return self.state / "files.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    # -- up ----------------------------------------------------------------------------------------
    def up(self) -> LabInfo:
        started = time.monotonic()
        with self._locked():
            self.log(ensure_engine(self.docker))
            image = ensure_image(self.docker, log=self.log)
            wheelhouse = ensure_wheelhouse(self.root, log=self.log)
            cluster = self._ensure_network("cluster")
            public = self._ensure_network("public")
            for net in (cluster, public):
                self.log(netfilter.ensure_drop(net.bridge, self.name))
            self._ensure_containers(image)
            hosts = self._hosts()
            key = ssh.ensure_key(self.ssh_key, f"r1deploy-lab-{self.name}")
            public_key = key.with_suffix(".pub").read_text()
            lines: list[str] = []
            for host in hosts:
                waited = time.monotonic()
                keys = ssh.wait_for_host_keys(self.docker, host.name)
                if time.monotonic() - waited > 15:
                    self.log(
                        f"{host.name}: sshd ready after {time.monotonic() - waited:.0f}s (busy machine?)"
                    )
                ssh.authorize(self.docker, host.name, public_key)
                lines += ssh.known_hosts_lines(host, keys)
            ssh.write_known_hosts(self.known_hosts, lines)
            self._close_stale_connections(hosts)
            urls = mirrors.ensure(self.name, cluster.gateway, self.state, wheelhouse.path)
            info = self._info(hosts, cluster, public, image, urls, model_dir=self._tiny_model())
            self.control_dir.mkdir(parents=True, exist_ok=True)
            written = inventory.write(info, self.control_dir)
            self._record([*written, self.ssh_key, self.ssh_key.with_suffix(".pub"), self.known_hosts])
        self.log(f"lab {self.name} is up ({len(hosts)} hosts) in {time.monotonic() - started:.0f}s")
        return info

    def _ensure_network(self, role: str) -> Network:
        name = f"{self.name}-{role}"
        found = self.docker.run(["network", "inspect", name], check=False)
        if found.returncode == 0:
            doc = json.loads(found.stdout)[0]
            if (doc.get("Labels") or {}).get(LABEL) != self.name:
                raise LabError(
                    f"network {name} exists but was not made by `r1deploy lab`: remove or rename it"
                )
            return network_from_inspect(doc)
        # --internal: no route out of the machine; hosts reach each other and the gateway (mirrors).
        self.docker.run(["network", "create", "--internal", "--label", f"{LABEL}={self.name}", name])
        return network_from_inspect(json.loads(self.docker.run(["network", "inspect", name]).stdout)[0])

    def _ensure_containers(self, image: str) -> None:
        wanted = specs(self.name, self.workers)
        existing = {h.name: h for h in self._hosts()}
        for name in set(existing) - {s.name for s in wanted}:
            self.log(f"removing {name} (not in this lab's shape any more)")
            self.docker.run(["rm", "-f", name])
        for spec in wanted:
            host = existing.get(spec.name)
            if host is None:
                self._check_free(spec.name)
                self._forget_facts(spec.name)
                self.docker.run(run_args(spec, self.name, image))
                self.log(f"started {spec.name} ({spec.group})")
            elif host.state != "running":
                self.docker.run(["start", spec.name])
                self.log(f"restarted {spec.name}")
            if spec.group == "frontend":
                current = self._hosts_by_name().get(spec.name)
                if current is not None and current.public_ip is None:
                    self.docker.run(["network", "connect", f"{self.name}-public", spec.name])

    def _close_stale_connections(self, hosts: list[Host]) -> None:
        """Hosts whose address changed since the last inventory: their SSH masters talk to nobody now."""
        previous_file = self.inventory_dir / "hosts.yml"
        if not previous_file.exists() or not self.control_dir.exists():
            return
        try:
            previous = inventory.addresses(yaml.safe_load(previous_file.read_text()) or {})
        except yaml.YAMLError:
            previous = {}
        moved = sorted(h.name for h in hosts if previous.get(h.name) not in (None, h.cluster_ip))
        if moved:
            ssh.close_control_masters(self.control_dir)
            self.log(f"new addresses for {', '.join(moved)}: closed the lab's SSH connections")

    def _check_free(self, name: str) -> None:
        found = self.docker.run(["container", "inspect", name], check=False)
        if found.returncode == 0:
            raise LabError(
                f"container {name} exists but is not part of lab {self.name}: "
                "remove it or pick another --name"
            )

    def _forget_facts(self, host: str) -> None:
        # ansible.cfg caches facts for a day; a new container under an old name must not inherit them.
        for path in fact_cache_files(self.root / ".cache" / "facts", host):
            path.unlink(missing_ok=True)

    def _tiny_model(self) -> Path | None:
        try:
            from r1deploy.tinymodel import ensure_tiny_model  # type: ignore[import-not-found]
        except ModuleNotFoundError as exc:
            if exc.name != "r1deploy.tinymodel":
                self.log(f"note: tiny model not generated ({exc}); install r1deploy[lab]")
            return None
        return Path(ensure_tiny_model(cache_dir() / "models" / "r1-tiny"))

    def _record(self, paths: list[Path]) -> None:
        known = set(json.loads(self.manifest.read_text())) if self.manifest.exists() else set()
        self.manifest.write_text(json.dumps(sorted(known | {str(p) for p in paths}), indent=1))

    # -- status ------------------------------------------------------------------------------------
    def _container_names(self) -> list[str]:
        rows = self.docker.run(["ps", "-a", "--format", '{{.Names}}\t{{.Label "r1deploy.lab"}}']).stdout
        return owned(rows, self.name)

    def _network_names(self) -> list[str]:
        rows = self.docker.run(["network", "ls", "--format", '{{.Name}}\t{{.Label "r1deploy.lab"}}']).stdout
        return owned(rows, self.name)

    def _hosts_by_name(self) -> dict[str, Host]:
        names = self._container_names()
        if not names:
            return {}
        docs = json.loads(self.docker.run(["inspect", *names]).stdout)
        return {h.name: h for h in (host_from_inspect(d, self.name) for d in docs)}

    def _hosts(self) -> list[Host]:
        return sort_hosts(list(self._hosts_by_name().values()))

    def _info(
        self,
        hosts: list[Host],
        cluster: Network,
        public: Network | None,
        image: str,
        urls: mirrors.MirrorUrls,
        model_dir: Path | None = None,
    ) -> LabInfo:
        alive = mirrors.running(self.state)
        return LabInfo(
            name=self.name,
            root=self.root,
            inventory_dir=self.inventory_dir,
            hosts=hosts,
            cluster=cluster,
            public=public,
            image=image,
            ssh_key=self.ssh_key,
            known_hosts=self.known_hosts,
            apt_mirror_url=urls.apt,
            apt_security_mirror_url=urls.apt_security,
            pip_find_links=urls.pip_find_links,
            mirrors_running={k: v is not None for k, v in alive.items()},
            model_dir=model_dir,
        )

    def status(self) -> LabInfo | None:
        """The lab as Docker sees it now, or None when nothing of it exists."""
        if not self.docker.ok(["info"]):
            return None
        hosts = self._hosts()
        nets = {n: None for n in self._network_names()}
        if not hosts and not nets:
            return None
        docs = {}
        for net in nets:
            docs[net] = network_from_inspect(
                json.loads(self.docker.run(["network", "inspect", net]).stdout)[0]
            )
        cluster = docs.get(f"{self.name}-cluster") or Network("", "", "", "")
        image = ""
        if hosts:
            image = self.docker.run(
                ["inspect", "--format", "{{.Config.Image}}", hosts[0].name]
            ).stdout.strip()
        model_dir = None
        lab_yml = self.inventory_dir / "group_vars" / "all" / "lab.yml"
        if lab_yml.exists():
            model = (yaml.safe_load(lab_yml.read_text()) or {}).get("r1deploy_lab_model_dir")
            model_dir = Path(model) if model else None
        return self._info(
            hosts, cluster, docs.get(f"{self.name}-public"), image, mirrors.urls(cluster.gateway), model_dir
        )

    # -- down --------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove this lab's containers, networks, firewall rules, mirrors, SSH material and inventory."""
        removed: list[str] = []
        with self._locked():
            if self.docker.ok(["info"]):
                containers = self._container_names()
                if containers:
                    self.docker.run(["rm", "-f", "-v", *containers])
                    removed += [f"container {c}" for c in containers]
                    for c in containers:
                        self._forget_facts(c)
                for net in self._network_names():
                    self.docker.run(["network", "rm", net])
                    removed.append(f"network {net}")
            rules = netfilter.remove_drops(self.name)
            if rules:
                removed.append(f"{rules} DOCKER-USER rule(s)")
            removed += mirrors.stop(self.state)
            if self.control_dir.exists():
                ssh.close_control_masters(self.control_dir)
            removed += self._remove_files()
        shutil.rmtree(self.state, ignore_errors=True)
        return removed

    def _remove_files(self) -> list[str]:
        paths = {Path(p) for p in json.loads(self.manifest.read_text())} if self.manifest.exists() else set()
        # Also the fixed paths, in case the manifest was lost.
        paths |= {
            self.ssh_key,
            self.ssh_key.with_suffix(".pub"),
            self.known_hosts,
            self.inventory_dir / "hosts.yml",
            self.inventory_dir / "group_vars" / "all" / "lab.yml",
        }
        removed = []
        for path in sorted(paths):
            if path.is_relative_to(self.inventory_dir) and path.is_file():
                path.unlink()
                removed.append(f"file {path.relative_to(self.root)}")
        # Folders go only when empty: secrets the roles generated in credentials/ stay.
        for folder in (
            self.credentials_dir,
            self.inventory_dir / "group_vars" / "all",
            self.inventory_dir / "group_vars",
            self.inventory_dir,
        ):
            with suppress(OSError):
                folder.rmdir()
        return removed
