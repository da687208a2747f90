"""The r1deploy_gpus fact from recorded nvidia-smi/lspci/proc outputs, the module, and the CLI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy import gpufacts

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "nvidia-smi"
SCHEMA_KEYS = {"source", "count", "devices", "driver", "nvswitch"}
SMI_DEVICE_KEYS = {"index", "name", "compute_capability", "memory_mib", "pci_bus_id", "persistence_mode"}


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def smi(name: str, fields: tuple[str, ...] = gpufacts.QUERY_FIELDS, rc: int = 0) -> dict:
    return {"rc": rc, "stdout": fixture(name), "fields": list(fields)}


def test_v100_dgx1_from_nvidia_smi() -> None:
    fact = gpufacts.build_fact(
        {
            "nvidia_smi": smi("v100-sxm2-32gb-x8.csv"),
            "lspci": {"rc": 0, "stdout": fixture("lspci-v100-sxm2-x8.txt")},
            "proc_version": fixture("proc-version-proprietary-580.txt"),
        }
    )
    assert set(fact) == SCHEMA_KEYS
    assert fact["source"] == "nvidia-smi" and fact["count"] == 8
    assert all(set(d) == SMI_DEVICE_KEYS for d in fact["devices"])
    first = fact["devices"][0]
    assert first == {
        "index": 0,
        "name": "Tesla V100-SXM2-32GB",
        "compute_capability": "7.0",
        "memory_mib": 32768,
        "pci_bus_id": "00000000:06:00.0",
        "persistence_mode": True,
    }
    assert fact["driver"] == {"version": "580.173.02", "flavour": "proprietary"}
    assert fact["nvswitch"] is False


def test_persistence_off_is_reported() -> None:
    fact = gpufacts.build_fact({"nvidia_smi": smi("v100-pcie-16gb-x4.csv")})
    assert [d["persistence_mode"] for d in fact["devices"]] == [False] * 4
    assert fact["driver"]["version"] == "580.173.02"  # from nvidia-smi when /proc is not read


def test_old_driver_without_compute_cap_uses_the_registry() -> None:
    fact = gpufacts.build_fact(
        {"nvidia_smi": smi("v100-sxm2-32gb-x4-r470-no-compute-cap.csv", gpufacts.QUERY_FIELDS_OLD)}
    )
    assert fact["count"] == 4
    assert {d["compute_capability"] for d in fact["devices"]} == {"7.0"}
    assert {d["memory_mib"] for d in fact["devices"]} == {32510}


def test_lspci_before_any_driver() -> None:
    fact = gpufacts.build_fact(
        {
            "nvidia_smi": {"rc": 9, "stdout": fixture("driver-not-loaded.txt"), "fields": []},
            "lspci": {"rc": 0, "stdout": fixture("lspci-v100-sxm2-x8.txt")},
            "proc_version": None,
        }
    )
    assert fact["source"] == "lspci" and fact["count"] == 8  # the ASPEED VGA is not NVIDIA's
    assert fact["devices"][0] == {
        "index": 0,
        "name": "GV100GL [Tesla V100 SXM2 32GB]",
        "pci_bus_id": "0000:06:00.0",
    }
    assert fact["driver"] == {"version": "", "flavour": "none"}


def test_nvswitch_host_from_lspci() -> None:
    fact = gpufacts.build_fact(
        {
            "nvidia_smi": {"rc": 127, "stdout": ""},
            "lspci": {"rc": 0, "stdout": fixture("lspci-dgx2-nvswitch.txt")},
        }
    )
    assert fact["count"] == 16 and fact["nvswitch"] is True


def test_no_gpu_at_all_is_source_none() -> None:
    fact = gpufacts.build_fact(
        {
            "nvidia_smi": {"rc": 127, "stdout": ""},
            "lspci": {"rc": 0, "stdout": fixture("lspci-no-nvidia.txt")},
        }
    )
    assert fact == {
        "source": "none",
        "count": 0,
        "devices": [],
        "driver": {"version": "", "flavour": "none"},
        "nvswitch": False,
    }


def test_open_kernel_module_flavour() -> None:
    assert gpufacts.parse_driver_version(fixture("proc-version-open-580.txt")) == ("580.159.04", "open")
    assert gpufacts.parse_driver_version(fixture("proc-version-proprietary-580.txt")) == (
        "580.173.02",
        "proprietary",
    )


def test_sysfs_lines_name_v100s_by_pci_id(tmp_path: Path) -> None:
    dev = tmp_path / "0000:06:00.0"
    dev.mkdir()
    (dev / "vendor").write_text("0x10de\n")
    (dev / "device").write_text("0x1db5\n")
    (dev / "class").write_text("0x030200\n")
    devices, _ = gpufacts.parse_lspci(gpufacts.sysfs_lspci(str(tmp_path)))
    assert devices == [{"index": 0, "name": "GV100GL [Tesla V100 SXM2 32GB]", "pci_bus_id": "0000:06:00.0"}]


def test_garbage_from_nvidia_smi_is_an_error_not_a_fact() -> None:
    with pytest.raises(gpufacts.FactError, match="line 1"):
        gpufacts.parse_nvidia_smi("0, Tesla V100-SXM2-32GB, 7.0\n")


def test_h200_line_from_the_lent_machine() -> None:
    fact = gpufacts.build_fact({"nvidia_smi": smi("h200-x1.csv")})
    assert fact["devices"][0]["compute_capability"] == "9.0" and fact["devices"][0]["memory_mib"] == 143771


def test_module_queries_the_same_fields_as_the_parser() -> None:
    tree = ast.parse((REPO / "plugins" / "modules" / "r1deploy_gpu_facts.py").read_text())
    fields = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "QUERY_FIELDS"
    )
    assert tuple(fields) == gpufacts.QUERY_FIELDS


def test_cli_prints_the_fact_from_a_recorded_file() -> None:
    cmd = [
        sys.executable,
        "-m",
        "r1deploy.gpufacts",
        "--nvidia-smi-output",
        str(FIX / "v100-sxm2-32gb-x4.csv"),
    ]
    cmd += ["--lspci-output", str(FIX / "lspci-no-nvidia.txt")]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    fact = json.loads(r.stdout)["r1deploy_gpus"]
    assert fact["count"] == 4 and fact["source"] == "nvidia-smi"


def test_module_and_filter_on_this_gpu_less_machine(tmp_path: Path) -> None:
    """The real module through Ansible (local connection), then the filter: count 0, source none."""
    playbook = tmp_path / "probe.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - r1deploy_gpu_facts:\n      register: probe\n"
        '    - ansible.builtin.debug:\n        msg: "FACT={{ probe.raw | r1deploy_gpu_facts | to_json }}"\n'
    )
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        str(playbook),
    ]
    cmd += ["-e", f"ansible_python_interpreter={sys.executable}"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if "FACT=" in x)
    text = line.split("FACT=", 1)[1].rstrip('"').replace('\\"', '"')
    fact = json.loads(text)
    assert fact["source"] == "none" and fact["count"] == 0 and fact["driver"]["flavour"] == "none"


@pytest.mark.parametrize("csv", ["h200-x4.csv", "h200-x4-with-units.csv"])
def test_real_capture_from_the_lent_4x_h200(csv: str) -> None:
    """Recorded on the lent machine (nounits and with units): open kernel module, as right for Hopper."""
    fact = gpufacts.build_fact({"nvidia_smi": smi(csv), "proc_version": fixture("h200-x4-proc-version.txt")})
    assert fact["count"] == 4 and {d["memory_mib"] for d in fact["devices"]} == {143771}
    assert [d["index"] for d in fact["devices"]] == [0, 1, 2, 3]
    assert fact["driver"] == {"version": "580.159.04", "flavour": "open"}


def test_real_h200_fact_plans_the_full_r1_on_four_gpus_as_too_small() -> None:
    """671B FP8 (about 627 GiB of weights) cannot fit 4 x 140 GiB; the refusal names the layout."""
    from r1deploy.planner import PlanRequest, make_plan

    fact = gpufacts.build_fact({"nvidia_smi": smi("h200-x4.csv")})
    d = fact["devices"][0]
    p = make_plan(
        PlanRequest(
            model="DeepSeek-R1",
            gpu=d["name"],
            gpus_per_node=fact["count"],
            compute_capability=d["compute_capability"],
            gpu_memory_mib=d["memory_mib"],
        )
    )
    assert not p["ok"] and any("GiB of weights per GPU" in e for e in p["errors"])
