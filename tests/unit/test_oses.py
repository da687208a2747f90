"""r1deploy.oses is the one list of supported releases: preflight, the GPU stack and the serving venv
agree on it, and Ansible's facts map to the right release."""

import pytest

from r1deploy import oses, runtime
from r1deploy.gpustack import GpuStackError, os_target
from r1deploy.planner import preflight


@pytest.mark.parametrize(
    ("distribution", "version", "name"),
    [
        ("Debian", "12.12", "Debian 12"),
        ("Debian", "12", "Debian 12"),
        ("Ubuntu", "22.04", "Ubuntu 22.04"),
        ("Ubuntu", "24.04", "Ubuntu 24.04"),
        ("Ubuntu", "24", "Ubuntu 24.04"),
        ("Rocky", "9.6", "EL 9"),
        ("RedHat", "9", "EL 9"),
        ("AlmaLinux", "9.4", "EL 9"),
    ],
)
def test_facts_name_their_release(distribution: str, version: str, name: str) -> None:
    release = oses.find(distribution, version)
    assert release is not None and release.name == name


@pytest.mark.parametrize(
    ("distribution", "version"),
    [("Ubuntu", "22.10"), ("Ubuntu", "20.04"), ("Debian", "11"), ("Rocky", "8.9"), ("CentOS", "9"), ("", "")],
)
def test_other_releases_are_not_claimed(distribution: str, version: str) -> None:
    assert oses.find(distribution, version) is None
    assert preflight.os_findings(
        "h1",
        {
            "distribution": distribution or "Fedora",
            "distribution_version": version or "40",
            "distribution_major_version": (version or "40").split(".")[0],
        },
        preflight.SUPPORTED_OS,
    )
    with pytest.raises(GpuStackError):
        os_target(distribution, version)


@pytest.mark.parametrize("release", oses.RELEASES, ids=lambda r: r.name)
def test_every_consumer_accepts_every_release(release: oses.Release) -> None:
    for distribution in release.distributions:
        version = release.version if "." in release.version else release.version + ".1"
        facts = {
            "distribution": distribution,
            "distribution_version": version,
            "distribution_major_version": release.major,
        }
        assert preflight.os_findings("h1", facts, preflight.SUPPORTED_OS) == []
        target = os_target(distribution, version)
        assert (target.pkg, target.key) == (release.package_manager, release.nvidia_repo_key)
        # Both GPU profiles get an OS Python (a lock exists for it: tests/static/test_locks.py); the
        # cpu profile is the lab's, locked for Debian 12's 3.11 only.
        for profile in ("volta", "cuda"):
            plan = runtime.venv_plan(distribution, release.major, profile)
            assert plan.python in release.pythons and plan.packages


def test_nvidia_repository_folders() -> None:
    assert [r.nvidia_repo_key for r in oses.RELEASES] == ["debian12", "ubuntu2204", "ubuntu2404", "rhel9"]
