"""Selection rules of r1deploy.gpustack over a matrix of OS, GPU and installed-driver facts."""

from __future__ import annotations

import base64
import itertools
import json

import pytest

from r1deploy import gpustack as gs

OS = {
    "ubuntu2204": {"distribution": "Ubuntu", "distribution_version": "22.04", "architecture": "x86_64"},
    "ubuntu2404": {"distribution": "Ubuntu", "distribution_version": "24.04", "architecture": "x86_64"},
    "debian12": {"distribution": "Debian", "distribution_version": "12.12", "architecture": "x86_64"},
    "rocky9": {"distribution": "Rocky", "distribution_version": "9.6", "architecture": "x86_64"},
}
# nvidia-smi names and compute capabilities, and what lspci prints before a driver exists.
GPUS = {
    "V100": ("Tesla V100-SXM2-32GB", "7.0", "NVIDIA Corporation GV100GL [Tesla V100 SXM2 32GB]"),
    "T4": ("Tesla T4", "7.5", "NVIDIA Corporation TU104GL [Tesla T4]"),
    "A100": ("NVIDIA A100-SXM4-80GB", "8.0", "NVIDIA Corporation GA100 [A100 SXM4 80GB]"),
    "H100": ("NVIDIA H100 80GB HBM3", "9.0", "NVIDIA Corporation GH100 [H100 SXM5 80GB]"),
}
# What the host runs now: absent, an old branch, the right one, the open flavour of the right one.
DRIVERS = {
    "absent": {"version": "", "flavour": "none"},
    "old": {"version": "535.261.03", "flavour": "proprietary"},
    "correct": {"version": "580.173.02", "flavour": "proprietary"},
    "open": {"version": "580.173.02", "flavour": "open"},
}
# The source that can give R580 on each OS (Debian's own archive has 535 only).
SOURCE_580 = {"ubuntu2204": "distro", "ubuntu2404": "distro", "debian12": "nvidia", "rocky9": "nvidia"}


def fact(
    gpu: str, driver: str = "absent", count: int = 8, lspci: bool = False, nvswitch: bool = False
) -> dict:
    smi, cc, pci = GPUS[gpu]
    dev = (
        {"index": 0, "name": pci, "pci_bus_id": "00000000:06:00.0"}
        if lspci
        else {
            "index": 0,
            "name": smi,
            "compute_capability": cc,
            "memory_mib": 32768,
            "pci_bus_id": "00000000:06:00.0",
        }
    )
    return {
        "source": "lspci" if lspci else "nvidia-smi",
        "count": count,
        "devices": [dict(dev, index=i) for i in range(count)],
        "driver": DRIVERS[driver],
        "nvswitch": nvswitch,
    }


def plan(os_key: str, gpu_fact: dict, **opts) -> dict:
    options = {"branch": "580", "flavour": "auto", "source": SOURCE_580[os_key]} | opts
    return gs.driver_plan(gpu_fact, OS[os_key], options, kernel="6.8.0-45-generic")


MATRIX = list(itertools.product(OS, GPUS, DRIVERS))


@pytest.mark.parametrize(("os_key", "gpu", "driver"), MATRIX, ids=["-".join(m) for m in MATRIX])
def test_driver_matrix(os_key: str, gpu: str, driver: str) -> None:
    p = plan(os_key, fact(gpu, driver))
    turing_or_newer = gpu != "V100"
    if driver == "absent":
        assert p["errors"] == []
        assert p["action"] == "install"
        # Proprietary by default on every GPU here; nothing of the open flavour is installed.
        assert p["flavour"] == "proprietary"
        assert not any("open" in pkg for pkg in p["packages"])
        assert p["headers_packages"]
    elif driver == "correct" or (driver == "open" and turing_or_newer):
        # Skip cleanly: the right driver is already loaded (DGX or preinstalled).
        assert p["errors"] == []
        assert p["action"] == "present"
        assert p["packages"] == []
        assert p["flavour"] == DRIVERS[driver]["flavour"]
    elif driver == "open":  # open module on a V100: it ignores the GPU
        assert p["action"] != "install"
        assert any(
            "ignores compute capability 7.0" in e and "nvidia_driver_force_install" in e for e in p["errors"]
        )
    else:  # old branch: replaced only when forced
        assert any("branch 535, not 580" in e and "nvidia_driver_force_install" in e for e in p["errors"])
        forced = plan(os_key, fact(gpu, driver), force=True)
        assert forced["errors"] == []
        assert forced["action"] == "install"
        assert "replacing" in forced["reason"]


@pytest.mark.parametrize("os_key", list(OS))
def test_open_flavour_refused_on_volta_allowed_on_turing(os_key: str) -> None:
    volta = plan(os_key, fact("V100"), flavour="open")
    assert any("nvidia_driver_flavour is 'open'" in e and "7.0" in e for e in volta["errors"])
    turing = plan(os_key, fact("T4"), flavour="open")
    assert turing["errors"] == []
    assert turing["flavour"] == "open"
    assert turing["other_flavour_packages"]  # the proprietary packages are blocked instead


def test_open_flavour_refused_when_lspci_cannot_tell_architecture() -> None:
    f = fact("V100", lspci=True)
    f["devices"] = [{"index": 0, "name": "NVIDIA Corporation Device 2bff"}]
    p = plan("ubuntu2404", f, flavour="open")
    assert any("cannot tell the architecture" in e for e in p["errors"])
    # auto picks proprietary, which drives every architecture up to Hopper
    assert plan("ubuntu2404", f)["flavour"] == "proprietary"


@pytest.mark.parametrize("gpu", list(GPUS))
def test_lspci_names_give_the_architecture(gpu: str) -> None:
    smi_cc = gs.device_cc(fact(gpu)["devices"][0])
    pci_cc = gs.device_cc(fact(gpu, lspci=True)["devices"][0])
    assert smi_cc == pci_cc


def test_lspci_open_on_volta_refused_even_without_compute_capability() -> None:
    p = plan("ubuntu2404", fact("V100", lspci=True), flavour="open")
    assert any("nvidia_driver_flavour is 'open'" in e for e in p["errors"])


def test_branch_past_580_refused_on_volta_not_on_hopper() -> None:
    p = plan("ubuntu2404", fact("V100"), branch="595")
    assert any("R580 is the last branch" in e and "nvidia_driver_branch: '580'" in e for e in p["errors"])
    assert plan("ubuntu2404", fact("H100"), branch="595")["errors"] == []


def test_hopper_needs_a_recent_branch() -> None:
    p = plan("ubuntu2404", fact("H100"), branch="470")
    assert any("needs driver branch 525" in e for e in p["errors"])


def test_blackwell_needs_the_open_flavour() -> None:
    f = fact("H100")
    f["devices"] = [{"index": 0, "name": "NVIDIA B200", "compute_capability": "10.0"}]
    assert plan("ubuntu2404", f)["flavour"] == "open"
    assert any(
        "needs the open kernel modules" in e for e in plan("ubuntu2404", f, flavour="proprietary")["errors"]
    )


def test_debian_distro_is_honest_about_its_branch() -> None:
    p = plan("debian12", fact("V100"), source="distro")
    assert any(
        "carries driver branch 535 only" in e and "nvidia_driver_source: nvidia" in e for e in p["errors"]
    )
    ok = plan("debian12", fact("V100"), source="distro", branch="535")
    assert ok["errors"] == []
    assert ok["packages"] == ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced", "dkms"]
    assert ok["other_flavour_packages"] == ["nvidia-open-kernel-dkms"]
    assert ok["debian_nonfree"] is True
    assert ok["repo"] == {}


def test_debian_nvidia_repo_gives_580() -> None:
    p = plan("debian12", fact("V100"))
    assert p["errors"] == []
    assert p["packages"] == ["cuda-drivers-580", "dkms"]
    assert p["other_flavour_packages"] == ["nvidia-open-580"]
    assert p["repo"]["url"] == "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"
    assert p["repo"]["key_url"].endswith("/3bf863cc.pub")


@pytest.mark.parametrize("os_key", ["ubuntu2204", "ubuntu2404"])
def test_ubuntu_source_is_one_variable(os_key: str) -> None:
    canonical = plan(os_key, fact("V100"), source="distro")
    assert canonical["packages"][:2] == ["nvidia-headless-580-server", "nvidia-dkms-580-server"]
    assert canonical["repo"] == {}
    nvidia = plan(os_key, fact("V100"), source="nvidia")
    assert nvidia["packages"] == ["cuda-drivers-580", "dkms"]
    assert f"/repos/{os_key}/x86_64/" in nvidia["repo"]["url"]


def test_rocky_uses_the_proprietary_module_stream() -> None:
    p = plan("rocky9", fact("V100"))
    assert p["packages"] == ["@nvidia-driver:580-dkms", "dkms"]
    assert p["other_flavour_packages"] == ["@nvidia-driver:580-open"]
    assert p["headers_packages"] == ["kernel-devel-6.8.0-45-generic", "kernel-headers-6.8.0-45-generic"]
    assert p["repo"]["key_url"].endswith("/D42D0685.pub")
    assert any(
        "nvidia_driver_source: nvidia" in e for e in plan("rocky9", fact("V100"), source="distro")["errors"]
    )


def test_branch_590_packages_lose_the_suffix() -> None:
    p = plan("ubuntu2404", fact("H100"), source="nvidia", branch="590")
    assert p["packages"][0] == "cuda-drivers"


def test_unsupported_os_is_named() -> None:
    p = gs.driver_plan(fact("V100"), {"distribution": "Ubuntu", "distribution_version": "20.04"}, {}, "k")
    assert p["errors"] == [
        "Ubuntu 20.04 is not supported by the GPU stack roles (supported: Debian 12, Ubuntu 22.04, "
        "Ubuntu 24.04, EL 9 (Rocky, RedHat, AlmaLinux))"
    ]


def test_cpu_only_host_skips_with_one_message() -> None:
    p = plan("debian12", fact("V100", count=0))
    assert p["action"] == "skip"
    assert p["errors"] == []
    assert "CPU-only host" in p["reason"] and "still written" in p["reason"]


def test_missing_fact_says_run_preflight() -> None:
    with pytest.raises(gs.GpuStackError, match=r"run playbooks/preflight\.yml first"):
        gs.driver_plan(None, OS["debian12"], {}, "k")
    # the local fact wrapping is accepted too
    assert gs.normalise_gpu_fact({"r1deploy_gpus": fact("V100")})["count"] == 8


def test_fabric_manager_only_with_nvswitch() -> None:
    assert plan("ubuntu2404", fact("V100"))["fabricmanager_packages"] == []
    p = plan("ubuntu2404", fact("V100", nvswitch=True))
    assert p["fabricmanager"] is True
    assert p["fabricmanager_packages"] == ["nvidia-fabricmanager-580"]
    deb = plan("debian12", fact("V100", nvswitch=True), source="distro", branch="535")
    assert any("Debian does not package Fabric Manager" in e for e in deb["errors"])


def test_secure_boot_is_explained_and_blocks_install() -> None:
    f = fact("V100")
    p = gs.driver_plan(f, OS["ubuntu2404"], {"branch": "580"}, "k", secure_boot="enabled")
    assert any("Secure Boot is enabled" in e and "mokutil --import" in e for e in p["errors"])
    allowed = gs.driver_plan(
        f, OS["ubuntu2404"], {"branch": "580", "secure_boot_allowed": True}, "k", "enabled"
    )
    assert allowed["errors"] == [] and allowed["warnings"]
    # an already working driver is not blocked by Secure Boot
    ok = gs.driver_plan(fact("V100", "correct"), OS["ubuntu2404"], {"branch": "580"}, "k", "enabled")
    assert ok["action"] == "present" and ok["errors"] == []


def test_secure_boot_efivar() -> None:
    on = base64.b64encode(b"\x06\x00\x00\x00\x01").decode()
    off = base64.b64encode(b"\x06\x00\x00\x00\x00").decode()
    assert gs.secure_boot_state(True, on) == "enabled"
    assert gs.secure_boot_state(True, off) == "disabled"
    assert gs.secure_boot_state(False) == "unsupported"
    assert gs.secure_boot_state(True, "") == "unknown"


def test_hold_list_covers_the_driver_not_the_toolkit() -> None:
    installed = dict.fromkeys(
        [
            "nvidia-kernel-dkms",
            "libcuda1",
            "nvidia-smi",
            "libnvidia-ml1",
            "firmware-nvidia-gsp",
            "nvidia-persistenced",
            "nvidia-cuda-toolkit",
            "nvidia-cuda-dev",
            "libnccl2",
            "dkms",
            "bash",
            "nvidia-headless-580-server",
            "cuda-drivers-580",
            "nvidia-container-toolkit",
        ],
        (),
    )
    p = plan("ubuntu2404", fact("V100"))
    assert gs.hold_packages(installed, p["hold_regex"]) == [
        "cuda-drivers-580",
        "firmware-nvidia-gsp",
        "libcuda1",
        "libnvidia-ml1",
        "nvidia-headless-580-server",
        "nvidia-kernel-dkms",
        "nvidia-persistenced",
        "nvidia-smi",
    ]


def test_versionlock_lines() -> None:
    p = plan("rocky9", fact("V100"))
    installed = {
        "nvidia-driver": [{"epoch": "3", "version": "580.82.07", "release": "1.el9"}],
        "kmod-nvidia-latest-dkms": [{"epoch": None, "version": "580.82.07", "release": "1.el9"}],
        "kernel": [{"epoch": None, "version": "5.14.0", "release": "570.el9"}],
    }
    assert gs.versionlock_lines(installed, p["hold_regex"]) == [
        "kmod-nvidia-latest-dkms-0:580.82.07-1.el9.*",
        "nvidia-driver-3:580.82.07-1.el9.*",
    ]


PROPRIETARY_VERSION = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.173.02  Fri Sep 12 00:00:00 UTC 2025\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)
OPEN_VERSION = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
    "(dvs-builder@U22-I3-AF03-09-1)  Tue Mar  3 00:00:00 UTC 2026\n"
)


def test_parse_driver_version_file() -> None:
    assert gs.parse_driver_version_file(PROPRIETARY_VERSION) == {
        "version": "580.173.02",
        "flavour": "proprietary",
    }
    assert gs.parse_driver_version_file(OPEN_VERSION) == {"version": "580.159.04", "flavour": "open"}
    assert gs.parse_driver_version_file("") == {"version": "", "flavour": "none"}


def test_verify_accepts_open_on_hopper_and_refuses_it_on_volta() -> None:
    h200 = "0, NVIDIA H200, 9.0, 143771, 580.159.04, Enabled, 00000000:00:06.0\n"
    ok = gs.verify_driver(h200, OPEN_VERSION, {"branch": "580"}, 1, want_persistence=True)
    assert ok["ok"], ok["errors"]
    v100 = "0, Tesla V100-SXM2-32GB, 7.0, 32768, 580.173.02, Enabled, 00000000:06:00.0\n"
    bad = gs.verify_driver(v100, OPEN_VERSION, {"branch": "580"}, 1)
    assert not bad["ok"] and "open kernel module is loaded" in bad["errors"][0]


def test_verify_notices_ignored_gpus_and_missing_module() -> None:
    one = "0, Tesla V100-SXM2-32GB, 7.0, 32768, 580.173.02, Disabled, 00000000:06:00.0\n"
    res = gs.verify_driver(one, PROPRIETARY_VERSION, {"branch": "580"}, 8)
    assert not res["ok"] and res["errors"] == [
        "nvidia-smi lists 1 GPUs but the host has 8: the driver ignores some "
        "(check `dmesg | grep NVRM` for 'will ignore this GPU')"
    ]
    off = gs.verify_driver(one, PROPRIETARY_VERSION, {"branch": "580"}, 1, want_persistence=True)
    assert off["errors"] == ["persistence mode is off: check `systemctl status nvidia-persistenced`"]
    assert gs.verify_driver(one, PROPRIETARY_VERSION, {"branch": "535"}, 1)["errors"] == [
        "driver 580.173.02 is loaded, not branch 535"
    ]
    gone = gs.verify_driver("", "", {"branch": "580"}, 8)
    assert "not loaded" in gone["errors"][0]


def test_h200_device_machine_driver_is_accepted() -> None:
    """The lent H200 machine: driver 580.159.04, open module, Ubuntu 24.04 -> install skipped."""
    f = {
        "source": "nvidia-smi",
        "count": 1,
        "devices": [{"index": 0, "name": "NVIDIA H200", "compute_capability": "9.0", "memory_mib": 143771}],
        "driver": {"version": "580.159.04", "flavour": "open"},
        "nvswitch": False,
    }
    p = gs.driver_plan(f, OS["ubuntu2404"], {"branch": "580"}, "6.8.0-1-generic")
    assert p["errors"] == [] and p["action"] == "present" and p["flavour"] == "open"


# ------------------------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize(
    ("gpu", "version", "ok"),
    [
        ("V100", "12.8", True),
        ("V100", "12.6", True),
        ("V100", "13.0", False),
        ("T4", "13.0", True),
        ("H100", "13.0", True),
        ("A100", "12.8", True),
    ],
)
def test_cuda_13_refused_on_volta(gpu: str, version: str, ok: bool) -> None:
    p = gs.cuda_plan(fact(gpu, "correct"), OS["ubuntu2404"], {"enabled": True, "version": version})
    assert (p["errors"] == []) is ok
    if ok:
        major, minor = version.split(".")
        assert p["packages"] == [f"cuda-toolkit-{major}-{minor}"]
        assert p["bin_dir"] == f"/usr/local/cuda-{version}/bin"
    else:
        assert "cannot target compute capability 7.0" in p["errors"][0] and "12.8" in p["errors"][0]


def test_cuda_disabled_by_default_and_skipped_on_cpu_hosts() -> None:
    assert gs.cuda_plan(fact("V100"), OS["debian12"], {})["action"] == "skip"
    assert "CPU-only" in gs.cuda_plan(fact("V100", count=0), OS["debian12"], {"enabled": True})["reason"]


def test_cuda_distro_versions_are_honest() -> None:
    p = gs.cuda_plan(fact("V100"), OS["debian12"], {"enabled": True, "version": "12.8", "source": "distro"})
    assert "own CUDA toolkit is 11.8" in p["errors"][0]
    ok = gs.cuda_plan(fact("V100"), OS["debian12"], {"enabled": True, "version": "11.8", "source": "distro"})
    assert ok["errors"] == [] and ok["packages"] == ["nvidia-cuda-toolkit"]
    assert gs.cuda_plan(fact("V100"), OS["rocky9"], {"enabled": True, "source": "distro"})["errors"]


def test_cuda_13_needs_a_580_driver() -> None:
    p = gs.cuda_plan(fact("H100", "old"), OS["ubuntu2404"], {"enabled": True, "version": "13.0"})
    assert any("needs branch 580" in e for e in p["errors"])


# ------------------------------------------------------------------------------------------- NCCL


def test_libnccl_matches_the_cuda_major() -> None:
    p = gs.libnccl_plan(fact("V100"), OS["ubuntu2404"], {"enabled": True, "cuda_major": 12, "dev": True})
    assert p["packages"] == ["libnccl2", "libnccl-dev"] and p["version_glob"] == "/\\+cuda12\\./"
    bad = gs.libnccl_plan(fact("V100"), OS["ubuntu2404"], {"enabled": True, "cuda_major": 13})
    assert bad["action"] == "none" and "CUDA 13" in bad["errors"][0]
    rocky = gs.libnccl_plan(fact("A100"), OS["rocky9"], {"enabled": True, "cuda_major": 12})
    assert rocky["packages"] == ["libnccl"]
    assert gs.libnccl_plan(fact("V100", count=0), OS["debian12"], {"enabled": True})["action"] == "skip"
    installed = {
        "libnccl2": [{"version": "2.28.9-1+cuda13.0"}],
        "libnccl-dev": [{"version": "2.21.5-1+cuda12.8"}],
    }
    assert gs.libnccl_mismatched(installed, ["libnccl2", "libnccl-dev"], 12) == ["libnccl2"]
    assert gs.libnccl_mismatched({}, ["libnccl2"], 12) == []


IFACES = {
    "lo": {"device": "lo", "ipv4": {"address": "127.0.0.1"}},
    "eth0": {"device": "eth0", "ipv4": {"address": "192.0.2.5"}},
    "eth1": {
        "device": "eth1",
        "ipv4": {"address": "10.0.0.11"},
        "ipv4_secondaries": [{"address": "10.0.0.99"}],
    },
}


def test_iface_for_ip() -> None:
    assert gs.iface_for_ip(IFACES, "10.0.0.11") == "eth1"
    assert gs.iface_for_ip(IFACES, "10.0.0.99") == "eth1"
    assert gs.iface_for_ip(IFACES, "10.9.9.9") == ""


def test_host_ifaces_from_facts() -> None:
    facts = {"interfaces": ["lo", "eth0", "eth1"], **IFACES}
    res = gs.host_ifaces(
        {
            "gpu01": {"r1deploy_node_ip": "10.9.9.9", "ansible_facts": facts},
            "gpu02": {"r1deploy_node_ip": "10.0.0.12"},
        },
        overrides={"gpu01": "10.0.0.11"},
    )
    assert res["ifaces"] == {"gpu01": "eth1", "gpu02": ""}
    assert res["errors"] == [
        "gpu02: no network facts (a --limit run without cached facts): run once without --limit, "
        "or set nccl_socket_ifname explicitly"
    ]
    bridge = {"interfaces": ["br-1a2b"], "br_1a2b": {"device": "br-1a2b", "ipv4": {"address": "172.30.0.2"}}}
    assert gs.host_ifaces({"h": {"r1deploy_node_ip": "172.30.0.2", "ansible_facts": bridge}})["ifaces"] == {
        "h": "br-1a2b"
    }


def test_socket_ifname_is_the_same_on_every_host() -> None:
    same = gs.nccl_socket_ifname({"gpu01": "eth1", "gpu02": "eth1"}, "auto")
    assert same == {"value": "=eth1", "errors": []}
    mixed = gs.nccl_socket_ifname({"gpu01": "eth1", "gpu02": "ens5"}, "auto")
    assert mixed["value"] == "=ens5,eth1"
    missing = gs.nccl_socket_ifname({"gpu01": "eth1", "gpu02": ""}, "auto")
    assert "gpu02" in missing["errors"][0] and "nccl_socket_ifname" in missing["errors"][0]
    assert gs.nccl_socket_ifname({"gpu01": ""}, "ib0")["value"] == "ib0"


def test_nccl_env_defaults_and_overrides() -> None:
    env = gs.nccl_env({"socket_ifname": "auto", "gloo_socket_ifname": "auto"}, "eth1", "=eth1")
    assert env == {"env": {"NCCL_SOCKET_IFNAME": "=eth1", "GLOO_SOCKET_IFNAME": "eth1"}, "errors": []}
    full = gs.nccl_env(
        {
            "socket_ifname": "ib",
            "gloo_socket_ifname": "ib0",
            "ib_hca": "mlx5_0,mlx5_1",
            "debug": "trace",
            "nvls_enable": False,
            "ib_disable": "",
            "extra": {"NCCL_CUMEM_ENABLE": "0"},
        },
        "eth1",
        "=eth1",
    )["env"]
    assert full == {
        "NCCL_SOCKET_IFNAME": "ib",
        "GLOO_SOCKET_IFNAME": "ib0",
        "NCCL_IB_HCA": "mlx5_0,mlx5_1",
        "NCCL_NVLS_ENABLE": "0",
        "NCCL_DEBUG": "TRACE",
        "NCCL_CUMEM_ENABLE": "0",
    }
    assert "NCCL_DEBUG" not in gs.nccl_env({}, "eth1", "=eth1")["env"]  # off by default


def test_nccl_env_refuses_bad_input() -> None:
    errs = gs.nccl_env({"debug": "LOUD", "extra": {"PATH": "/tmp", "NCCL_X": 'a"b'}}, "eth1", "=eth1")[
        "errors"
    ]
    assert any("nccl_debug is 'LOUD'" in e for e in errs)
    assert any("'PATH' is not an NCCL" in e for e in errs)
    assert any("NCCL_X contains" in e for e in errs)
    assert gs.nccl_env({"socket_ifname": "eth0; rm -rf /"}, "", "")["errors"]


# ------------------------------------------------------------------------------------- NCCL check

IB_LOG = """\
gpu01:1234:1240 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB ; OOB ib0:10.0.0.11<0>
gpu01:1234:1240 [0] NCCL INFO Using network IB
gpu01:1234:1250 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/IPC
gpu01:1234:1250 [0] NCCL INFO Channel 00/0 : 15[7] -> 0[0] [receive] via NET/IB/0/GDRDMA
"""
SOCKET_LOG = """\
gpu01:1234:1240 [0] NCCL INFO NET/Socket : Using [0]eth1:10.0.0.11<0>
gpu01:1234:1240 [0] NCCL INFO Using network Socket
gpu01:1234:1250 [0] NCCL INFO Channel 00/0 : 15[7] -> 0[0] [receive] via NET/Socket/0
"""
ROWS = [
    {"size_bytes": 1 << 20, "time_us": 900.0, "algbw_gbps": 1.1, "busbw_gbps": 2.0},
    {"size_bytes": 256 << 20, "time_us": 30000.0, "algbw_gbps": 8.9, "busbw_gbps": 16.7},
]


def test_transport_parsing() -> None:
    assert gs.parse_nccl_transports(IB_LOG)["net"] == "IB"
    assert gs.parse_nccl_transports(SOCKET_LOG) == {
        "vias": ["NET/SOCKET"],
        "network": "Socket",
        "net": "Socket",
    }
    assert gs.parse_nccl_transports("")["net"] == ""


def test_verdict_uses_the_floor_of_the_link_nccl_chose() -> None:
    ib = gs.nccl_verdict(ROWS, "nccl", 2, IB_LOG)
    assert (
        ib["ok"] and ib["link"] == "net_ib" and "NET/IB: bus bandwidth 16.70 GB/s at 256 MiB" in ib["message"]
    )
    slow = [dict(r, busbw_gbps=0.3) for r in ROWS]
    sock = gs.nccl_verdict(slow, "nccl", 2, SOCKET_LOG)
    assert not sock["ok"] and sock["link"] == "net_socket" and "fell back to TCP sockets" in sock["message"]
    strict = gs.nccl_verdict(ROWS, "nccl", 2, IB_LOG, floors={"net_ib": 20})
    assert not strict["ok"]
    assert gs.nccl_verdict(ROWS, "gloo", 2)["link"] == "gloo"
    assert not gs.nccl_verdict([], "nccl", 1)["ok"]


def test_single_node_links() -> None:
    p2p = "NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n"
    shm = "NCCL INFO Channel 00/0 : 0[0] -> 1[1] via SHM/direct/direct\n"
    assert gs.nccl_verdict(ROWS, "nccl", 1, p2p)["link"] == "p2p"
    assert gs.nccl_verdict(ROWS, "nccl", 1, shm)["link"] == "shm"


def test_format_results() -> None:
    lines = gs.format_results(ROWS)
    assert lines[1].split() == ["1", "MiB", "900.0", "1.100", "2.000"]


def test_check_layout_one_process_per_gpu_head_first() -> None:
    order = ["gpu01", "gpu02", "gpu03", "gpu01", "gpu02", "gpu03"]  # head, workers, then every play host
    lay = gs.nccl_check_layout({"gpu02": 8, "gpu01": 8, "gpu03": 4}, order)
    assert lay["backend"] == "nccl" and lay["world_size"] == 20 and lay["master"] == "gpu01"
    assert lay["hosts"]["gpu03"] == {"node_rank": 2, "nproc": 4, "rank_offset": 16}
    cpu = gs.nccl_check_layout({"head": 0, "worker": 0}, ["head", "worker"])
    assert cpu["backend"] == "gloo" and cpu["world_size"] == 2 and cpu["errors"] == []
    mixed = gs.nccl_check_layout({"head": 8, "worker": 0}, ["head", "worker"])
    assert "some GPU-group hosts have GPUs and some have none (worker)" in mixed["errors"][0]
    assert gs.nccl_check_layout({"solo": 1}, ["solo"])["errors"]


def test_check_report_combines_hosts() -> None:
    layout = gs.nccl_check_layout({"gpu01": 8, "gpu02": 8}, ["gpu01", "gpu02"])
    head = {"ok": True, "results": ROWS, "nccl_log": IB_LOG.splitlines(), "errors": []}
    worker = {"ok": True, "results": None, "nccl_log": [], "errors": []}
    runs = {"gpu01": {"stdout": json.dumps(head)}, "gpu02": {"stdout": json.dumps(worker)}}
    rep = gs.nccl_check_report(runs, layout)
    assert rep["ok"] and rep["verdict"]["link"] == "net_ib" and len(rep["table"]) == 3
    broken = {
        "gpu01": {"stdout": json.dumps(head)},
        "gpu02": {"stdout": "", "stderr": "No module named torch"},
    }
    bad = gs.nccl_check_report(broken, layout)
    assert not bad["ok"] and bad["failures"] == ["gpu02: the check script failed: No module named torch"]
