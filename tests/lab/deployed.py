"""The `deployed_lab` fixture: the whole stack deployed to the session's lab once, with deploy.yml.

Every test that needs a serving cluster uses it; the deploy runs exactly as an operator runs it
(`ansible-playbook -i inventories/<lab> deploy.yml` over SSH). Measured numbers go to
test-artifacts/numbers.json (reported, never asserted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.helpers import REPO, PlaybookRun, inventory_groups, run_playbook

ARTIFACTS = REPO / "test-artifacts"


@dataclass
class DeployedLab:
    inventory: Path
    groups: dict[str, dict[str, str]]
    first_run: PlaybookRun
    api_key: str
    vllm_url: str
    numbers: dict[str, float] = field(default_factory=dict)

    def record(self, name: str, value: float) -> None:
        self.numbers[name] = value
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "numbers.json").write_text(json.dumps(self.numbers, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def deployed_lab(lab) -> Iterator[DeployedLab]:
    inventory = Path(lab.inventory_dir)
    started = time.monotonic()
    run = run_playbook(inventory, "deploy.yml")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "deploy-first-run.log").write_text(run.output)
    if run.rc != 0:
        pytest.fail(f"deploy.yml failed on the lab (rc {run.rc}):\n{run.output[-10000:]}", pytrace=False)
    groups = inventory_groups(inventory)
    head_ip = next(iter(groups["ray_head"].values()))
    key = (inventory / "credentials" / "vllm_api_key").read_text().strip()
    deployed = DeployedLab(inventory, groups, run, key, f"http://{head_ip}:8000")
    deployed.record("cold_deploy_seconds", run.seconds)
    deployed.record("deploy_start_to_ready_seconds", round(time.monotonic() - started, 1))
    yield deployed
