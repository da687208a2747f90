"""The named steps of r1deploy.gpustack.driver_plan, one rule each, and the package's shared homes
(architecture thresholds, kernel header names)."""

from __future__ import annotations

import pytest

from r1deploy import gpustack as gs
from r1deploy.gpustack import driver as drv
from r1deploy.gpustack.oses import os_target

DEBIAN = os_target("Debian", "12.12")
UBUNTU = os_target("Ubuntu", "24.04")
ROCKY = os_target("Rocky", "9.6")
V100, T4, H100, B200 = (7, 0), (7, 5), (9, 0), (10, 0)


def test_thresholds_are_named_once() -> None:
    assert gs.VOLTA_CC < gs.TURING_CC < gs.BLACKWELL_CC
    assert gs.OPEN_MODULE_MIN_CC == gs.TURING_CC  # the GSP came with Turing
    assert gs.CUDA_MIN_CC[13] == gs.TURING_CC  # CUDA 13 dropped Volta
    assert gs.device_cc({"name": "GV100GL [Tesla V100 SXM2 32GB]"}) == gs.VOLTA_CC


@pytest.mark.parametrize("branch", ["580", "535"])
def test_branch_format_accepts_three_digits(branch: str) -> None:
    assert drv.branch_format_error(branch) == ""


@pytest.mark.parametrize("branch", ["58", "580.95", "latest", ""])
def test_branch_format_names_the_variable(branch: str) -> None:
    assert drv.branch_format_error(branch).startswith(f"nvidia_driver_branch is {branch!r}")


def test_choice_errors_name_both_variables() -> None:
    errors = drv.choice_errors(drv.DriverOptions(flavour="closed", source="runfile"))
    assert [e.split(" ")[0] for e in errors] == ["nvidia_driver_flavour", "nvidia_driver_source"]


def test_auto_flavour_is_proprietary_until_blackwell() -> None:
    assert drv.choose_flavour("auto", drv.allowed_flavours([V100])) == "proprietary"
    assert drv.choose_flavour("auto", drv.allowed_flavours([H100])) == "proprietary"
    assert drv.choose_flavour("auto", drv.allowed_flavours([B200])) == "open"
    assert drv.choose_flavour("open", ["proprietary"]) == "open"  # asked for: checked by flavour_errors


def test_open_flavour_needs_every_architecture_known() -> None:
    assert drv.unknown_architecture_errors(["Device 2bff"], "open", "lspci")
    assert drv.unknown_architecture_errors(["Device 2bff"], "auto", "lspci") == []
    assert drv.unknown_architecture_errors([], "open", "nvidia-smi") == []


def test_flavour_errors() -> None:
    assert "Volta or older" in drv.flavour_errors("open", 580, V100)[0]
    assert drv.flavour_errors("open", 580, T4) == []
    assert "needs the open kernel modules" in drv.flavour_errors("proprietary", 580, B200)[0]
    assert "need branch 515" in drv.flavour_errors("open", 510, T4)[0]
    assert "open kernel modules only" in drv.flavour_errors("proprietary", 620, T4)[0]


def test_branch_errors_keep_volta_on_580_and_new_gpus_on_new_branches() -> None:
    assert drv.branch_errors(580, [V100]) == []
    assert "R580 is the last branch" in drv.branch_errors(590, [V100, T4])[0]
    assert drv.branch_errors(590, [T4]) == []
    assert "needs driver branch 570" in drv.branch_errors(560, [B200])[0]
    assert "needs driver branch 525" in drv.branch_errors(515, [H100])[0]


def test_source_errors_follow_each_distribution_archive() -> None:
    assert (
        "no NVIDIA driver in its own repositories"
        in drv.source_errors(ROCKY, "distro", 580, "proprietary")[0]
    )
    assert drv.source_errors(ROCKY, "nvidia", 580, "proprietary") == []
    assert drv.source_errors(DEBIAN, "distro", 535, "proprietary") == []
    assert "branch 535 only, not 580" in drv.source_errors(DEBIAN, "distro", 580, "proprietary")[0]
    assert "open kernel module in contrib" in drv.source_errors(DEBIAN, "distro", 535, "open")[0]
    assert drv.source_errors(UBUNTU, "distro", 580, "open") == []


def test_fabricmanager_follows_nvswitch_unless_set() -> None:
    assert drv.fabricmanager_wanted("auto", True) and not drv.fabricmanager_wanted("auto", False)
    assert drv.fabricmanager_wanted("true", False) and not drv.fabricmanager_wanted("false", True)
    assert drv.fabricmanager_errors(True, []) and drv.fabricmanager_errors(True, ["fm"]) == []


def _verdict(version: str, loaded: str, **opts) -> drv.InstalledVerdict:
    options = drv.DriverOptions(**opts)
    allowed = drv.allowed_flavours([T4])
    return drv.installed_verdict(
        {"version": version, "flavour": loaded}, 580, "proprietary", options, allowed, T4
    )


def test_installed_verdict() -> None:
    assert _verdict("", "none").action == "install"
    present = _verdict("580.95.05", "open")  # auto accepts an open module on Turing
    assert (present.action, present.flavour, present.loaded_ok) == ("present", "open", True)
    refused = _verdict("535.261.03", "proprietary")
    assert refused.action == "" and "nvidia_driver_force_install: true" in refused.error
    forced = _verdict("535.261.03", "proprietary", force=True)
    assert forced.action == "install" and "replacing it" in forced.reason and not forced.loaded_ok
    assert _verdict("580.95.05", "open", flavour="proprietary").error  # asked for proprietary


def test_secure_boot_findings() -> None:
    assert drv.secure_boot_findings("disabled", False) == ([], [])
    errors, _ = drv.secure_boot_findings("enabled", False)
    assert "mokutil --import" in errors[0]
    assert drv.secure_boot_findings("enabled", True)[1]


@pytest.mark.parametrize(
    ("os_facts", "source", "branch", "loaded", "blocked"),
    [
        # Debian's own 535, proprietary loaded: the pin keeps blocking the open module.
        (
            {"distribution": "Debian", "distribution_version": "12.12"},
            "distro",
            "535",
            ("535.216.01", "proprietary"),
            ["nvidia-open-kernel-dkms"],
        ),
        # NVIDIA's repository, an open module loaded on Turing under auto: the proprietary one is blocked.
        (
            {"distribution": "Debian", "distribution_version": "12.12"},
            "nvidia",
            "580",
            ("580.95.05", "open"),
            ["cuda-drivers-580"],
        ),
        (
            {"distribution": "Ubuntu", "distribution_version": "24.04"},
            "distro",
            "580",
            ("580.159.04", "open"),
            ["nvidia-headless-580-server", "nvidia-dkms-580-server"],
        ),
    ],
)
def test_present_plan_blocks_the_flavour_that_is_not_loaded(
    os_facts: dict, source: str, branch: str, loaded: tuple[str, str], blocked: list[str]
) -> None:
    """The role enforces the pin on the present path too: it blocks the flavour that is not loaded."""
    fact = {
        "source": "nvidia-smi",
        "count": 1,
        "devices": [{"index": 0, "name": "Tesla T4", "compute_capability": "7.5"}],
        "driver": {"version": loaded[0], "flavour": loaded[1]},
        "nvswitch": False,
    }
    p = gs.driver_plan(fact, os_facts, {"branch": branch, "source": source}, kernel="6.1.0-1-amd64")
    assert p["errors"] == [] and p["action"] == "present" and p["flavour"] == loaded[1]
    assert p["packages"] == []  # nothing installed on the present path
    assert p["other_flavour_packages"] == blocked
    assert p["hold_regex"]  # holds are enforced on every run


def test_forced_reinstall_of_the_loaded_driver_needs_no_mok_question() -> None:
    fact = {
        "source": "nvidia-smi",
        "count": 1,
        "devices": [{"index": 0, "name": "Tesla V100-SXM2-32GB", "compute_capability": "7.0"}],
        "driver": {"version": "580.95.05", "flavour": "proprietary"},
        "nvswitch": False,
    }
    os_facts = {"distribution": "Ubuntu", "distribution_version": "24.04"}
    p = gs.driver_plan(fact, os_facts, {"branch": "580", "force": True}, "k", secure_boot="enabled")
    assert p["action"] == "install" and p["errors"] == []


@pytest.mark.parametrize(
    ("family", "names"),
    [
        ("Debian", ["linux-headers-6.1.0-27-amd64"]),
        ("RedHat", ["kernel-devel-6.1.0-27-amd64", "kernel-headers-6.1.0-27-amd64"]),
    ],
)
def test_kernel_header_names_have_one_home(family: str, names: list[str]) -> None:
    assert gs.headers_packages_for(gs.pkg_of_os_family(family), "6.1.0-27-amd64") == names


def test_unknown_os_family_names_the_supported_ones() -> None:
    with pytest.raises(gs.GpuStackError, match=r"Debian 12, Ubuntu 22\.04, Ubuntu 24\.04, EL 9"):
        gs.pkg_of_os_family("Suse")
