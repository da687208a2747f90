"""The gpu_stack Molecule scenario (molecule/gpu_stack) under pytest, since CI runs only pytest.

`molecule test -s gpu_stack`: create, prepare, --check, converge, idempotence (changed=0), testinfra
verify, destroy, on the lab's systemd image with real Debian packages from the lab's apt mirror.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "molecule" / "gpu_stack"

pytestmark = pytest.mark.lab


def _lab_env():
    spec = importlib.util.spec_from_file_location("gpu_stack_lab_env", SCENARIO / "lab_env.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def molecule_env():
    lab_env = _lab_env()
    env = dict(os.environ)
    env.update(lab_env.up())
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    yield env
    lab_env.down()


def test_gpu_stack_scenario(molecule_env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "molecule.log"
    with log.open("w") as out:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "molecule"), "test", "-s", "gpu_stack"],
            cwd=REPO,
            env=molecule_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1500,
            check=False,
        )
    text = log.read_text()
    assert result.returncode == 0, text[-12000:]
    # idempotence passed (molecule fails otherwise) and testinfra ran real tests
    assert "Idempotence completed successfully" in text or "idempotence" in text.lower()
    assert " passed" in text and " failed" not in text.split("verify")[-1]
    # The CPU-only host skipped each GPU role with its one message, naming the fact.
    converge = text.split("Running converge")[-1] if "Running converge" in text else text
    assert "cpu-only" in converge
    assert (
        converge.count("CPU-only host (r1deploy_gpus.count is 0): NVIDIA driver, CUDA toolkit and libnccl")
        >= 1
    )
    assert (
        "cuda_toolkit" not in converge
        or "CPU-only host (r1deploy_gpus.count is 0): no CUDA toolkit" in converge
    )
