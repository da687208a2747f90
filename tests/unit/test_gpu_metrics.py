"""The node_exporter role's GPU collector on recorded-format nvidia-smi output and kernel logs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
SCRIPT = REPO / "roles" / "node_exporter" / "files" / "r1deploy_gpu_metrics.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("r1deploy_gpu_metrics", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


metrics = _load()


def _samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, from the exposition text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_a_v100_host_with_faults_becomes_metrics_in_base_units() -> None:
    gpus = metrics.parse_query((FIXTURES / "v100-sxm2-32gb-x4-metrics-faults.csv").read_text())
    assert [g.index for g in gpus] == ["0", "1", "2", "3"]
    assert gpus[0].bus_id == "0000:1a:00"
    text = metrics.render(gpus, metrics.Counter(), success=True, expected=4, now=1_000.0)
    s = _samples(text)
    assert s['r1deploy_gpu_utilization_ratio{gpu="0"}'] == pytest.approx(0.87)
    assert s['r1deploy_gpu_memory_used_bytes{gpu="0"}'] == 30210 * 1024 * 1024
    assert s['r1deploy_gpu_memory_total_bytes{gpu="1"}'] == 32768 * 1024 * 1024
    assert s['r1deploy_gpu_temperature_celsius{gpu="2"}'] == 88
    assert s['r1deploy_gpu_power_watts{gpu="2"}'] == pytest.approx(298.77)
    assert s['r1deploy_gpu_ecc_corrected_volatile_errors{gpu="1"}'] == 12
    assert s['r1deploy_gpu_ecc_uncorrected_volatile_errors{gpu="2"}'] == 2
    assert s['r1deploy_gpu_sm_clock_hertz{gpu="2"}'] == 1290e6
    assert s['r1deploy_gpu_throttle_active{gpu="2",reason="hw_thermal_slowdown"}'] == 1
    assert s['r1deploy_gpu_throttle_active{gpu="0",reason="sw_power_cap"}'] == 0
    assert s["r1deploy_gpu_count"] == 4
    assert s["r1deploy_gpu_expected_count"] == 4
    assert s["r1deploy_gpu_collector_success"] == 1


def test_not_available_values_are_left_out_not_zero() -> None:
    """A GPU whose readings are `[N/A]` (e.g. one about to fall off the bus) gets no fake 0 readings."""
    gpus = metrics.parse_query((FIXTURES / "v100-sxm2-32gb-x4-metrics-faults.csv").read_text())
    s = _samples(metrics.render(gpus, metrics.Counter(), success=True, expected=None, now=0.0))
    assert 'r1deploy_gpu_temperature_celsius{gpu="3"}' not in s
    assert 'r1deploy_gpu_memory_total_bytes{gpu="3"}' in s
    assert "r1deploy_gpu_expected_count" not in s


def test_xid_lines_are_counted_per_bus_and_code_in_nvidia_smis_spelling() -> None:
    xids = metrics.parse_xids((FIXTURES / "kernel-log-xid.txt").read_text())
    assert xids == {("0000:3d:00", "48"): 1, ("0000:3d:00", "63"): 1, ("0000:3e:00", "79"): 1}
    gpus = metrics.parse_query((FIXTURES / "v100-sxm2-32gb-x4-metrics-faults.csv").read_text())
    assert {g.bus_id for g in gpus} >= {bus for bus, _ in xids}
    s = _samples(metrics.render(gpus, xids, success=True, expected=4, now=0.0))
    assert s['r1deploy_gpu_xid_errors{pci_bus_id="0000:3e:00",xid="79"}'] == 1
    assert s["r1deploy_gpu_xid_79_errors"] == 1


def test_the_lab_fixture_is_a_healthy_host() -> None:
    gpus = metrics.parse_query((FIXTURES / "v100-sxm2-32gb-x4-metrics.csv").read_text())
    s = _samples(metrics.render(gpus, metrics.Counter(), success=True, expected=4, now=0.0))
    assert max(v for k, v in s.items() if k.startswith("r1deploy_gpu_temperature_celsius")) < 85
    assert sum(v for k, v in s.items() if k.startswith("r1deploy_gpu_ecc_uncorrected")) == 0


def test_a_wrong_field_count_is_an_error_not_garbage() -> None:
    with pytest.raises(ValueError, match="expected 19 fields"):
        metrics.parse_query((FIXTURES / "v100-sxm2-32gb-x4.csv").read_text())


def test_the_exposition_format_is_valid_and_every_metric_has_help_and_type() -> None:
    gpus = metrics.parse_query((FIXTURES / "v100-sxm2-32gb-x4-metrics-faults.csv").read_text())
    text = metrics.render(
        gpus,
        metrics.parse_xids((FIXTURES / "kernel-log-xid.txt").read_text()),
        success=True,
        expected=4,
        now=0.0,
    )
    sample = re.compile(r'^[a-z_:][a-z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$')
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for line in text.splitlines():
        if not line.startswith("#"):
            assert sample.match(line), line
            assert line.split("{")[0].split(" ")[0] in helped & typed


def test_a_failing_nvidia_smi_still_writes_the_file_with_success_0(tmp_path: Path) -> None:
    """Run as the timer does, with an nvidia-smi that fails like one whose GPU fell off the bus."""
    fake = tmp_path / "nvidia-smi"
    message = "Unable to determine the device handle for GPU0000:3E:00.0: Unknown Error"
    fake.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 15\n")
    fake.chmod(0o755)
    out = tmp_path / "r1deploy_gpu.prom"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--output",
            str(out),
            "--nvidia-smi",
            str(fake),
            "--expected-gpus",
            "4",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "exited 15" in proc.stderr
    s = _samples(out.read_text())
    assert s["r1deploy_gpu_collector_success"] == 0
    assert s["r1deploy_gpu_count"] == 0
    assert s["r1deploy_gpu_expected_count"] == 4


def test_the_collector_replays_the_lab_stub_end_to_end(tmp_path: Path) -> None:
    stub = tmp_path / "nvidia-smi-stub"
    stub.write_text(f"#!/bin/sh\nexec cat {FIXTURES / 'v100-sxm2-32gb-x4-metrics.csv'}\n")
    stub.chmod(0o755)
    out = tmp_path / "r1deploy_gpu.prom"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(out), "--nvidia-smi", str(stub)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert _samples(out.read_text())["r1deploy_gpu_count"] == 4
    assert oct(out.stat().st_mode & 0o777) == "0o644"
