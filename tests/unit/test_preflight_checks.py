"""Stage-2 preflight rules (r1deploy.planner.preflight.check_hosts) on host reports built from the
recorded nvidia-smi/lspci fixtures: each bad host is refused, by name, with the fact and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from r1deploy import gpufacts, runtime
from r1deploy.planner.preflight import (
    address_findings,
    ansible_version_findings,
    busy_ports,
    check_hosts,
    clock_findings,
    cluster_setting_findings,
    cuda_major,
    cuda_volta_findings,
    disk_findings,
    gpu_findings,
    group_findings,
    open_modules_setting_findings,
    parse_ip_addr,
    parse_ss_listeners,
    python_findings,
    shm_findings,
    venv_findings,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-smi"
GIB = 1 << 30

SS_FREE = 'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=101,fd=3))\n'
IP_ADDR = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "2: ens1f0    inet 10.0.0.{n}/24 brd 10.0.0.255 scope global ens1f0\\       valid_lft forever\n"
    "3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever\n"
)


def gpus(
    name: str = "v100-sxm2-32gb-x4.csv", proc: str = "proc-version-proprietary-580.txt"
) -> dict[str, Any]:
    raw = {
        "nvidia_smi": {"rc": 0, "stdout": (FIX / name).read_text(), "fields": list(gpufacts.QUERY_FIELDS)},
        "lspci": {"rc": 0, "stdout": ""},
        "proc_version": (FIX / proc).read_text(),
    }
    return gpufacts.build_fact(raw)


def host(n: int, gpu_node: bool = True) -> dict[str, Any]:
    return {
        "gpu_node": gpu_node,
        "gpus": gpus() if gpu_node else {"source": "none", "count": 0, "devices": []},
        "distribution": "Debian",
        "distribution_version": "12.8",
        "distribution_major_version": "12",
        "kernel": "6.1.0-27-amd64",
        "node_ip": f"10.0.0.{n}",
        "addresses": ["127.0.0.1", f"10.0.0.{n}", "172.17.0.1"],
        "ip_output": IP_ADDR.format(n=n),
        "socket_ifnames": {"nccl_socket_ifname": "ens1", "nccl_gloo_socket_ifname": "auto"}
        if gpu_node
        else {},
        "mounts": [
            {"mount": "/", "size_available": 500 * GIB},
            {"mount": "/dev/shm", "size_total": 64 * GIB},
        ],
        "min_shm_mib": 1024,
        "venv_gib": 12,
        "clock_skew_s": 0.4,
        "ntp_synchronized": True,
        "ss_output": SS_FREE,
        "required_ports": [
            {"port": 6667, "variable": "ray_head_port", "purpose": "Ray GCS", "owners": ["gcs_server"]}
        ],
        "model_present": False,
        "venv_present": False,
        "kernel_headers": {"installed": True, "available": True, "package": "linux-headers-6.1.0-27-amd64"},
        "cuda_versions": {},
        "venv_versions": {},
    }


SETTINGS = {
    "r1deploy_model": "DeepSeek-R1-Distill-Qwen-32B",
    "r1deploy_gpu_model": "v100-sxm2-32gb",
    "r1deploy_gpus_per_node": 4,
    "vllm_server_tensor_parallel_size": 4,
    "vllm_server_pipeline_parallel_size": 2,
    "ray_head": "gpu01",
    "max_clock_skew_s": 10,
    "model_root": "/srv/models",
    "venv": "/opt/r1deploy/venv",
    "ignore_errors": False,
}


def cluster() -> dict[str, Any]:
    return {
        "settings": copy.deepcopy(SETTINGS),
        "hosts": {"gpu01": host(11), "gpu02": host(12), "web01": host(20, False)},
    }


def errors(data: dict[str, Any]) -> list[str]:
    return check_hosts(data)["errors"]


def test_a_good_v100_cluster_passes() -> None:
    result = check_hosts(cluster())
    assert result["ok"], result["errors"]
    assert result["plan"]["ok"] and result["plan"]["gpu"]["compute_capability"] == "7.0"


def only(errs: list[str], *needles: str) -> str:
    assert len(errs) == 1, errs
    for needle in needles:
        assert needle in errs[0], (needle, errs[0])
    return errs[0]


def test_gpu_count_differs_from_the_inventory() -> None:
    data = cluster()
    data["hosts"]["gpu02"]["gpus"] = gpus("v100-sxm2-32gb-x8.csv")
    only(errors(data), "gpu02:", "8 GPU(s) found", "declares 4", "r1deploy_gpus_per_node: 8")


def test_mixed_gpu_types_across_the_cluster() -> None:
    data = cluster()
    data["settings"]["r1deploy_gpus_per_node"] = 2
    data["settings"]["vllm_server_tensor_parallel_size"] = 2
    data["hosts"]["gpu01"]["gpus"] = gpus("mixed-v100-t4.csv")
    data["hosts"]["gpu02"]["gpus"] = gpus("mixed-v100-t4.csv")
    errs = errors(data)
    assert any("GPU types differ" in e and "Tesla T4" in e for e in errs), errs
    assert any(
        e.startswith("gpu01, gpu02:") and "'Tesla T4'" in e and "'Tesla V100-PCIE-32GB'" in e for e in errs
    ), errs


def test_declared_gpu_model_differs_from_the_hardware() -> None:
    data = cluster()
    for h in ("gpu01", "gpu02"):
        data["hosts"][h]["gpus"] = gpus("v100-pcie-16gb-x4.csv")
    only(errors(data), "gpu01, gpu02:", "found 'Tesla V100-PCIE-16GB', the inventory declares v100-sxm2-32gb")


def test_the_plan_is_redone_with_the_memory_the_hosts_report() -> None:
    """70B fits TP 4 x PP 2 on 32 GB V100s; the hosts' 16 GB cards cannot hold 16.4 GiB per GPU."""
    data = cluster()
    data["settings"]["r1deploy_model"] = "DeepSeek-R1-Distill-Llama-70B"
    assert check_hosts(data)["ok"]
    for h in ("gpu01", "gpu02"):
        data["hosts"][h]["gpus"] = gpus("v100-pcie-16gb-x4.csv")
    errs = errors(data)
    assert any(
        "with the hosts' GPU facts" in e and "16384 MiB x 0.9 = 14.4 GiB is usable" in e for e in errs
    ), errs


def test_lspci_names_before_the_driver_match_the_declared_gpu() -> None:
    data = cluster()
    data["settings"]["r1deploy_gpus_per_node"] = 8
    data["settings"]["vllm_server_tensor_parallel_size"] = 8
    for h in ("gpu01", "gpu02"):
        data["hosts"][h]["gpus"] = gpufacts.build_fact(
            {"lspci": {"rc": 0, "stdout": (FIX / "lspci-v100-sxm2-x8.txt").read_text()}}
        )
    assert check_hosts(data)["ok"], errors(data)


def test_older_driver_memory_is_used_for_the_plan() -> None:
    data = cluster()
    for h in ("gpu01", "gpu02"):
        data["hosts"][h]["gpus"] = gpufacts.build_fact(
            {
                "nvidia_smi": {
                    "rc": 0,
                    "stdout": (FIX / "v100-sxm2-32gb-x4-r470-no-compute-cap.csv").read_text(),
                    "fields": list(gpufacts.QUERY_FIELDS_OLD),
                }
            }
        )
    result = check_hosts(data)
    assert result["ok"], result["errors"]
    assert result["plan"]["gpu"]["memory_mib"] == 32510


def test_no_gpu_found_on_a_gpu_site() -> None:
    data = cluster()
    data["hosts"]["gpu01"]["gpus"] = {"source": "none", "count": 0, "devices": [], "driver": {}}
    assert any(e.startswith("gpu01:") and "no NVIDIA GPU found" in e for e in errors(data))


def test_open_kernel_modules_on_volta_are_refused() -> None:
    data = cluster()
    data["hosts"]["gpu02"]["gpus"] = gpus(proc="proc-version-open-580.txt")
    only(errors(data), "gpu02:", "open kernel modules", "proprietary R580")


def test_cuda_13_on_volta_is_refused_from_toolkit_and_torch() -> None:
    data = cluster()
    data["hosts"]["gpu01"]["cuda_versions"] = {"/usr/local/cuda/version.json": "13.0.1"}
    data["hosts"]["gpu02"]["cuda_versions"] = {
        "ansible_local.r1deploy_runtime.versions.torch": "2.11.0+cu130"
    }
    errs = errors(data)
    assert len(errs) == 2 and all("CUDA 13" in e and "sm_70" in e for e in errs), errs
    ok = cluster()
    ok["hosts"]["gpu01"]["cuda_versions"] = {"ansible_local.r1deploy_runtime.versions.torch": "2.10.0+cu128"}
    assert check_hosts(ok)["ok"]


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ("12.8", 12),
        ("13.0.1", 13),
        ("2.10.0+cu128", 12),
        ("cu130", 13),
        ("cuda-toolkit-13-0", 13),
        ("", None),
    ],
)
def test_cuda_major(text: str, major: int | None) -> None:
    assert cuda_major(text) == major


def test_unsupported_os_is_strict_and_the_escape_hatch_relaxes_it() -> None:
    data = cluster()
    data["hosts"]["web01"]["distribution"] = "Fedora"
    data["hosts"]["web01"]["distribution_version"] = "41"
    data["hosts"]["web01"]["distribution_major_version"] = "41"
    only(errors(data), "web01:", "Fedora 41 is not a supported OS")
    data["settings"]["ignore_errors"] = True
    relaxed = check_hosts(data)
    assert relaxed["ok"] and any("Fedora 41" in w for w in relaxed["warnings"])
    data["settings"]["ignore_errors"] = "true"  # a string is not the escape hatch
    assert not check_hosts(data)["ok"]


def test_node_ip_must_be_on_the_host() -> None:
    data = cluster()
    data["hosts"]["gpu02"]["node_ip"] = "10.0.0.99"
    only(errors(data), "gpu02:", "r1deploy_node_ip 10.0.0.99 is not configured on the host")


def test_nccl_interface_must_exist_and_carry_the_node_ip() -> None:
    data = cluster()
    data["hosts"]["gpu01"]["socket_ifnames"]["nccl_socket_ifname"] = "ib0"
    only(errors(data), "gpu01:", "nccl_socket_ifname='ib0' matches no interface")
    data = cluster()
    data["hosts"]["gpu01"]["socket_ifnames"]["nccl_socket_ifname"] = "docker"
    only(errors(data), "gpu01:", "selects docker0, which does not carry r1deploy_node_ip")
    data = cluster()
    data["hosts"]["gpu01"]["socket_ifnames"]["nccl_socket_ifname"] = "^docker,lo"
    assert check_hosts(data)["ok"]


def test_small_dev_shm_on_a_gpu_host() -> None:
    data = cluster()
    data["hosts"]["gpu01"]["mounts"][1]["size_total"] = 64 << 20
    only(errors(data), "gpu01:", "/dev/shm is 64 MiB, below 1024 MiB")


def test_port_held_by_another_program_but_not_by_our_own_service() -> None:
    data = cluster()
    data["hosts"]["gpu01"]["ss_output"] = (
        SS_FREE + 'LISTEN 0 511 0.0.0.0:6667 0.0.0.0:* users:(("redis-server",pid=9,fd=6))\n'
    )
    only(errors(data), "gpu01:", "TCP port 6667 (Ray GCS) is held by redis-server", "ray_head_port")
    data["hosts"]["gpu01"]["ss_output"] = (
        SS_FREE + 'LISTEN 0 511 10.0.0.11:6667 0.0.0.0:* users:(("gcs_server",pid=9,fd=6))\n'
    )
    assert check_hosts(data)["ok"]


def test_clock_skew() -> None:
    data = cluster()
    data["hosts"]["web01"]["clock_skew_s"] = -42.0
    only(errors(data), "web01:", "-42.0 s off the controller")


def test_the_serving_venvs_python_must_match_across_gpu_nodes() -> None:
    """The venv's Python (r1deploy.runtime's rule for the OS and profile), not Ansible's interpreter."""
    data = cluster()
    ubuntu_24 = {
        "distribution": "Ubuntu",
        "distribution_version": "24.04",
        "distribution_major_version": "24",
    }
    data["hosts"]["gpu02"].update(ubuntu_24)
    only(errors(data), "serving venvs' Python differs across GPU nodes", "gpu01=3.11", "gpu02=3.12")
    # Rocky 9: Ansible runs on python3 3.9; the role builds the venv with python3.12, like Ubuntu 24.04.
    data = cluster()
    rocky_9 = {"distribution": "Rocky", "distribution_version": "9.4", "distribution_major_version": "9"}
    data["hosts"]["gpu01"].update(rocky_9)
    data["hosts"]["gpu02"].update(ubuntu_24)
    assert not any("Python" in e for e in errors(data)), errors(data)
    # A user interpreter is the role's to probe (vllm_runtime preflight), not this check's.
    data = cluster()
    data["hosts"]["gpu02"].update(ubuntu_24)
    data["settings"]["vllm_runtime_python"] = "/opt/python3.11/bin/python3"
    assert not any("Python" in e for e in errors(data)), errors(data)


def test_serving_venvs_must_be_identical_after_install() -> None:
    data = cluster()
    data["hosts"]["gpu01"]["venv_versions"] = {
        "python": "3.12.3",
        "ray": "2.60.0",
        "vllm": "0.18.0",
        "torch": "2.10.0",
    }
    data["hosts"]["gpu02"]["venv_versions"] = {
        "python": "3.12.3",
        "ray": "2.59.0",
        "vllm": "0.18.0",
        "torch": "2.10.0",
    }
    # The rule's one home is r1deploy.runtime.same_versions (the vllm_runtime role runs it too).
    only(
        errors(data),
        "gpu02 has ray 2.59.0 but gpu01 has ray 2.60.0",
        "every node needs the same serving venv",
    )


def test_disk_for_the_model_and_venv() -> None:
    data = cluster()
    data["hosts"]["gpu02"]["mounts"][0]["size_available"] = 40 * GIB
    only(errors(data), "gpu02:", "/ has 40.0 GiB free", "need 76.1 GiB")
    data["hosts"]["gpu02"]["model_present"] = True  # a re-run: only the venv still has to fit
    assert check_hosts(data)["ok"]


def test_kernel_headers_needed_before_the_driver_build() -> None:
    data = cluster()
    data["hosts"]["gpu01"]["gpus"]["driver"] = {"version": "", "flavour": "none"}
    data["hosts"]["gpu01"]["kernel_headers"] = {
        "installed": False,
        "available": False,
        "package": "linux-headers-6.1.0-9-amd64",
    }
    only(errors(data), "gpu01:", "no kernel headers for the running kernel", "linux-headers-6.1.0-9-amd64")


def test_cpu_site_with_gpu_less_hosts_passes() -> None:
    data = cluster()
    data["settings"]["r1deploy_gpu_model"] = None
    for h in ("gpu01", "gpu02"):
        data["hosts"][h]["gpus"] = {
            "source": "none",
            "count": 0,
            "devices": [],
            "driver": {"version": "", "flavour": "none"},
        }
        data["hosts"][h]["min_shm_mib"] = 64
        data["hosts"][h]["mounts"][1]["size_total"] = 64 << 20
    assert check_hosts(data)["ok"], errors(data)


def test_parsers() -> None:
    listeners = parse_ss_listeners('LISTEN 0 4096 [::]:8000 [::]:* users:(("python3",pid=5,fd=9))\n')
    assert listeners == [{"port": 8000, "address": "[::]", "process": "python3"}]
    assert busy_ports(listeners, [{"port": "8000", "owners": ["python"]}]) == []
    assert parse_ip_addr(IP_ADDR.format(n=7))["ens1f0"] == ["10.0.0.7"]


# ---- the named steps of check_inventory and check_hosts, each with the rule it holds ------------------


def codes(findings: list) -> list[tuple[str, str]]:
    return [(f.code, f.host) for f in findings]


def test_ansible_version_floor_and_tested_series() -> None:
    assert codes(ansible_version_findings("2.18.9")) == [("ansible-version", "controller")]
    assert codes(ansible_version_findings("2.20.0")) == [("ansible-untested", "controller")]
    assert ansible_version_findings("2.19.4") == [] and ansible_version_findings("") == []


def test_group_contract() -> None:
    good = {"ray_head": ["g1"], "ray_workers": ["g2"], "gpu_nodes": ["g1", "g2"], "frontend": ["w"]}
    assert group_findings(good) == []
    bad = {
        "ray_head": ["g1", "g2"],
        "ray_workers": ["g2", "g3"],
        "gpu_nodes": ["g1", "g2", "g4"],
        "frontend": [],
    }
    assert codes(group_findings(bad)) == [
        ("ray-head-count", "ray_head"),
        ("frontend-empty", "frontend"),
        ("host-two-roles", "g2"),
        ("not-gpu-node", "g3"),
        ("gpu-node-no-role", "g4"),
    ]


def test_one_machine_one_name_and_a_node_ip_each() -> None:
    hosts = {
        "a": {"ansible_host": "h1", "r1deploy_node_ip": "10.0.0.1"},
        "b": {"ansible_host": "h1", "r1deploy_node_ip": "10.0.0.300"},
        "c": {"ansible_host": "h3"},
    }
    assert codes(address_findings(["a", "b", "c"], hosts)) == [
        ("duplicate-address", "b"),
        ("node-ip-invalid", "b"),
        ("node-ip-missing", "c"),
    ]


def test_cluster_settings_and_open_modules_from_the_inventory() -> None:
    hosts = {
        "g1": {"r1deploy_gpus_per_node": 4},
        "g2": {"r1deploy_gpus_per_node": 8, "nvidia_driver_flavour": "open"},
    }
    assert [f.subject for f in cluster_setting_findings(["g1", "g2"], hosts)] == ["r1deploy_gpus_per_node"]
    assert codes(open_modules_setting_findings("7.0", ["g1", "g2"], hosts)) == [("open-modules-volta", "g2")]
    assert open_modules_setting_findings("7.5", ["g1", "g2"], hosts) == []  # Turing has GSP
    assert open_modules_setting_findings(None, ["g1", "g2"], hosts) == []


def test_python_must_match_and_be_in_vllms_range() -> None:
    assert python_findings({"g1": "3.11.2", "g2": "3.11.9"}) == []
    assert codes(python_findings({"g1": "3.11.2", "g2": "3.12.1"})) == [("python-differs", "gpu_nodes")]
    assert codes(python_findings({"g1": "3.9.18"})) == [("python-range", "g1")]


def test_disk_needs_are_summed_per_mount() -> None:
    mounts = [{"mount": "/", "size_available": 20 * GIB}, {"mount": "/srv", "size_available": 80 * GIB}]
    need = {"/srv/models": 70 * GIB, "/opt/r1deploy/venv": 12 * GIB}
    assert disk_findings("g1", {"mounts": mounts}, need) == []
    need["/var/tmp/other"] = 10 * GIB  # same mount as the venv: 22 GiB on /, 20 free
    assert codes(disk_findings("g1", {"mounts": mounts}, need)) == [("disk", "g1")]
    assert codes(disk_findings("g1", {"mounts": []}, {"/x": 1})) == [("disk-unknown", "g1")]


def test_shm_and_clock() -> None:
    small = {"min_shm_mib": 1024, "mounts": [{"mount": "/dev/shm", "size_total": 64 << 20}]}
    assert codes(shm_findings("g1", small)) == [("shm-small", "g1")]
    assert shm_findings("g1", {**small, "shm_bytes": 2 << 30}) == []
    assert codes(clock_findings("g1", {"clock_skew_s": -11.0, "ntp_synchronized": False}, 10)) == [
        ("clock-skew", "g1"),
        ("ntp-off", "g1"),
    ]


def test_identical_venvs_come_from_the_runtime_rule() -> None:
    same = {"python": "3.12.3", "torch": "2.10.0", "vllm": "0.18.0", "ray": "2.60.0"}
    assert venv_findings({"g1": same, "g2": dict(same)}) == []
    found = venv_findings({"g1": same, "g2": {**same, "vllm": "0.19.0"}})
    assert [f.message for f in found] == runtime.same_versions({"g1": same, "g2": {**same, "vllm": "0.19.0"}})


def test_cuda13_is_refused_only_on_volta() -> None:
    report = {"gpus": gpus(), "cuda_versions": {"/usr/local/cuda/version.json": "13.0.1"}}
    assert codes(cuda_volta_findings("g1", report)) == [("cuda13-volta", "g1")]
    assert cuda_volta_findings("g1", {**report, "cuda_versions": {"x": "12.8"}}) == []


def test_gpus_on_a_site_declared_cpu_only_are_reported_truthfully() -> None:
    """The roles choose CPU or GPU from the GPU fact (planner.plan.resolve_device), not from
    r1deploy_gpu_model: the warning must not claim that serving runs on CPU."""
    found = gpu_findings("gpu01", gpus(), None, None)
    assert [f.code for f in found] == ["gpus-unused"]
    assert "will use the GPUs" in found[0].message and "r1deploy_gpu_model" in found[0].fix
