"""The `deployed_lab` fixture: the whole stack deployed to the session's lab once.

Every test that needs a serving cluster uses it. The deploy is the README's second step, exactly as a
new user types it: `r1deploy deploy -i inventories/<lab>` (playbooks/site.yml, what deploy.yml imports,
through the CLI's runner, over SSH). Its output, closing block included, is kept for
tests/lab/test_newcomer.py. Measured numbers go to test-artifacts/numbers.json (reported, never
asserted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.helpers import REPO, PlaybookRun, inventory_groups, run_cli_deploy

ARTIFACTS = REPO / "test-artifacts"

# The tests' lab runs with non-default values of the shared settings (roles/r1deploy), written into
# its inventory by the `lab` fixture (tests/lab/conftest.py): a role or playbook that types its own
# literal (/opt/r1deploy/venv, 6667, the r1deploy user) instead of reading the shared setting breaks
# here. `make demo`'s lab keeps the defaults a site gets.
LAB_SERVICE_USER = "r1serve"
LAB_VENV = "/opt/r1serve/venv"
LAB_RAY_PORT = 6380
LAB_SHARED_SETTINGS = {
    "r1deploy_service_user": LAB_SERVICE_USER,
    "r1deploy_venv": LAB_VENV,
    "r1deploy_ray_port": LAB_RAY_PORT,
}


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
    run = run_cli_deploy(inventory)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "deploy-first-run.log").write_text(run.output)
    if run.rc != 0:
        pytest.fail(
            f"`r1deploy deploy` failed on the lab (rc {run.rc}):\n{run.output[-10000:]}", pytrace=False
        )
    groups = inventory_groups(inventory)
    head_ip = next(iter(groups["ray_head"].values()))
    key = (inventory / "credentials" / "vllm_api_key").read_text().strip()
    deployed = DeployedLab(inventory, groups, run, key, f"http://{head_ip}:8000")
    deployed.record("cold_deploy_seconds", run.seconds)
    deployed.record("deploy_start_to_ready_seconds", round(time.monotonic() - started, 1))
    yield deployed
