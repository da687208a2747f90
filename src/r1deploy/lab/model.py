"""What a lab is made of, as the CLI prints it and the test fixtures use it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GROUPS = ("ray_head", "ray_workers", "frontend")


@dataclass(frozen=True)
class Host:
    name: str  # inventory host name = container name = hostname
    group: str  # ray_head | ray_workers | frontend
    cluster_ip: str
    public_ip: str | None = None
    state: str = "running"

    @property
    def gpu_node(self) -> bool:
        return self.group in ("ray_head", "ray_workers")


@dataclass(frozen=True)
class Network:
    name: str
    subnet: str
    gateway: str
    bridge: str


@dataclass
class LabInfo:
    name: str
    root: Path
    inventory_dir: Path
    hosts: list[Host]
    cluster: Network
    public: Network | None
    image: str
    ssh_key: Path
    known_hosts: Path
    apt_mirror_url: str
    apt_security_mirror_url: str
    pip_find_links: str
    mirrors_running: dict[str, bool] = field(default_factory=dict)
    model_dir: Path | None = None

    def group(self, group: str) -> list[Host]:
        return [h for h in self.hosts if h.group == group]

    @property
    def head(self) -> Host:
        return self.group("ray_head")[0]

    @property
    def workers(self) -> list[Host]:
        return self.group("ray_workers")

    @property
    def frontend(self) -> Host:
        return self.group("frontend")[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        return data
