"""What the GPU stack roles left on each host of the gpu_stack scenario (see molecule.yml)."""

from __future__ import annotations

import os

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("all")


@pytest.fixture
def name(host) -> str:
    return host.backend.get_hostname()


def kernel(host) -> str:
    """The kernel release prepare.yml chose (Debian's current ABI)."""
    fact = host.file("/etc/ansible/facts.d/molecule.fact").content_string
    return fact.split('"kernel_release": "')[1].split('"')[0]


def env_file(host) -> dict[str, str]:
    f = host.file("/etc/r1deploy/nccl.env")
    assert f.exists and f.mode == 0o644 and f.user == "root"
    return dict(
        line.split("=", 1) for line in f.content_string.splitlines() if line and not line.startswith("#")
    )


# ---------------------------------------------------------------------------------------- every host


def test_nccl_env_names_the_cluster_interface(host, name) -> None:
    env = env_file(host)
    assert env["GLOO_SOCKET_IFNAME"] == "eth0"
    # the same on every host (vLLM copies the head's NCCL_* to the workers): exact-match list
    assert env["NCCL_SOCKET_IFNAME"] == "=eth0"
    if name == "gpu-t4":
        assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_CUMEM_ENABLE"] == "0"
    else:
        assert "NCCL_DEBUG" not in env  # off by default
    assert "NCCL_DEBUG=TRACE" in host.file("/etc/r1deploy/nccl.env").content_string  # one variable away


def test_check_script_is_installed(host) -> None:
    f = host.file("/usr/local/lib/r1deploy/r1deploy_nccl_check.py")
    assert f.exists and f.mode == 0o755
    assert "usage" in host.check_output("python3 /usr/local/lib/r1deploy/r1deploy_nccl_check.py --help")


# ---------------------------------------------------------------------------------------- V100, Debian


def test_v100_debian_nonfree_source_added(host, name) -> None:
    if name != "gpu-v100":
        pytest.skip("Debian-archive driver host only")
    src = host.file("/etc/apt/sources.list.d/r1deploy-debian-nonfree.sources").content_string
    assert "Components: contrib non-free non-free-firmware" in src
    assert "URIs: http://" in src and ":3142/deb.debian.org/debian\n" in src
    sec = host.file("/etc/apt/sources.list.d/r1deploy-debian-security-nonfree.sources").content_string
    assert "Suites: bookworm-security" in sec and ":3142/deb.debian.org/debian-security" in sec


def test_v100_gets_debians_proprietary_535_with_headers_first(host, name) -> None:
    if name != "gpu-v100":
        pytest.skip("Debian-archive driver host only")
    for pkg in ("nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"):
        p = host.package(pkg)
        assert p.is_installed, pkg
        assert p.version.startswith("535."), (pkg, p.version)
    assert host.package(f"linux-headers-{kernel(host)}").is_installed
    assert not host.package("nvidia-open-kernel-dkms").is_installed
    # The open flavour cannot even be selected any more: pinned to -1.
    policy = host.check_output("apt-cache policy nvidia-open-kernel-dkms")
    assert "Candidate: (none)" in policy
    # The module source DKMS builds on a real host (autoinstall is off here; see molecule.yml).
    dkms_conf = host.check_output("cat /usr/src/nvidia-current-535.*/dkms.conf")
    assert 'PACKAGE_NAME="nvidia-current"' in dkms_conf


def test_v100_driver_packages_are_held(host, name) -> None:
    if name != "gpu-v100":
        pytest.skip("Debian-archive driver host only")
    held = set(host.check_output("apt-mark showhold").split())
    assert {"nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "libnvidia-ml1", "firmware-nvidia-gsp"} <= held
    assert "dkms" not in held and "bash" not in held
    pref = host.file("/etc/apt/preferences.d/r1deploy-nvidia-driver.pref").content_string
    assert "Pin: version 535.*" in pref
    # unattended-upgrades and `apt-get upgrade` leave held packages alone
    upgrade = host.run("apt-get -s -o Debug::NoLocking=1 dist-upgrade")
    assert upgrade.rc == 0
    assert "Inst nvidia-kernel-dkms" not in upgrade.stdout


def test_v100_nouveau_blacklisted_in_the_rebuilt_initramfs(host, name) -> None:
    if name != "gpu-v100":
        pytest.skip("Debian-archive driver host only")
    conf = host.file("/etc/modprobe.d/r1deploy-blacklist-nouveau.conf").content_string
    assert "blacklist nouveau" in conf and "options nouveau modeset=0" in conf
    listing = host.check_output(f"lsinitramfs /boot/initrd.img-{kernel(host)}")
    assert "etc/modprobe.d/r1deploy-blacklist-nouveau.conf" in listing


def test_v100_persistenced_enabled_in_persistence_mode(host, name) -> None:
    if name != "gpu-v100":
        pytest.skip("Debian-archive driver host only")
    svc = host.service("nvidia-persistenced")
    assert svc.is_enabled
    exec_start = host.check_output("systemctl show -p ExecStart nvidia-persistenced")
    assert "--persistence-mode" in exec_start and "--user nvpd" in exec_start
    verify = host.run("systemd-analyze verify nvidia-persistenced.service")
    assert "r1deploy.conf" not in verify.stderr, verify.stderr


def test_v100_reboot_requested_once(host, name) -> None:
    if name != "gpu-v100":
        pytest.skip("Debian-archive driver host only")
    marker = host.file("/run/r1deploy/nvidia-driver-reboot-required")
    assert marker.exists
    assert marker.content_string.splitlines() == ["driver packages changed", "nouveau blacklisted"]


def test_v100_no_cuda_toolkit_by_default(host, name) -> None:
    if name != "gpu-v100":
        pytest.skip("Debian-archive driver host only")
    assert not host.file("/etc/profile.d/r1deploy-cuda.sh").exists
    assert not host.package("nvidia-cuda-toolkit").is_installed


# ---------------------------------------------------------------------------------------- T4, NVIDIA repo


def test_t4_nvidia_repository_open_flavour(host, name) -> None:
    if name != "gpu-t4":
        pytest.skip("NVIDIA-repository host only")
    src = host.file("/etc/apt/sources.list.d/r1deploy-nvidia-cuda.sources").content_string
    assert "URIs: file:///srv/nvidia-stub/" in src and "Signed-By: /srv/nvidia-stub/key.gpg" in src
    assert host.package("nvidia-open-580").is_installed
    assert not host.package("cuda-drivers-580").is_installed
    assert "Candidate: (none)" in host.check_output("apt-cache policy cuda-drivers-580")
    assert "nvidia-open-580" in host.check_output("apt-mark showhold").split()
    assert host.package(f"linux-headers-{kernel(host)}").is_installed
    assert not host.file("/etc/apt/sources.list.d/r1deploy-debian-nonfree.sources").exists


def test_t4_cuda_12_8_on_path(host, name) -> None:
    if name != "gpu-t4":
        pytest.skip("NVIDIA-repository host only")
    assert host.package("cuda-toolkit-12-8").is_installed
    assert not host.package("cuda-toolkit-13-0").is_installed
    out = host.check_output("bash -lc 'command -v nvcc && nvcc --version && echo $CUDA_HOME'")
    assert "/usr/local/cuda-12.8/bin/nvcc" in out and "release 12.8" in out and "/usr/local/cuda-12.8" in out
    assert (
        host.file("/etc/ld.so.conf.d/r1deploy-cuda.conf")
        .content_string.strip()
        .endswith("/usr/local/cuda-12.8/lib64")
    )


def test_t4_libnccl_for_cuda_12_not_the_newer_cuda_13_build(host, name) -> None:
    if name != "gpu-t4":
        pytest.skip("NVIDIA-repository host only")
    assert host.package("libnccl2").version == "2.21.5-1+cuda12.8"
    assert host.package("libnccl-dev").version == "2.21.5-1+cuda12.8"


def test_t4_reboot_requested(host, name) -> None:
    if name != "gpu-t4":
        pytest.skip("NVIDIA-repository host only")
    assert host.file("/run/r1deploy/nvidia-driver-reboot-required").content_string.startswith(
        "driver packages changed"
    )


# ---------------------------------------------------------------------------------------- CPU-only


def test_cpu_only_host_gets_no_gpu_software(host, name) -> None:
    if name != "cpu-only":
        pytest.skip("CPU-only host only")
    installed = host.check_output("dpkg-query -W -f '${Package}\\n'").split()
    assert not [
        p
        for p in installed
        if p.startswith(("nvidia", "libnvidia", "libcuda", "cuda", "libnccl", "linux-headers"))
    ]
    for path in (
        "/etc/apt/sources.list.d/r1deploy-nvidia-cuda.sources",
        "/etc/apt/sources.list.d/r1deploy-debian-nonfree.sources",
        "/etc/apt/preferences.d/r1deploy-nvidia-driver.pref",
        "/etc/modprobe.d/r1deploy-blacklist-nouveau.conf",
        "/run/r1deploy/nvidia-driver-reboot-required",
    ):
        assert not host.file(path).exists, path
