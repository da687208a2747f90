"""GPU stack selection rules: NVIDIA driver, CUDA toolkit, NCCL environment and the NCCL check verdict.

The one place these rules live, one module per concern:

* :mod:`.gpus`       the GPU fact, compute capabilities, the architecture thresholds (``VOLTA_CC``...)
* :mod:`.oses`       supported OSes, NVIDIA's repository, kernel header package names
* :mod:`.driver`     the driver plan (branch, flavour, packages), in named steps
* :mod:`.holds`      which installed packages are the driver's (apt hold / dnf versionlock)
* :mod:`.verify`     Secure Boot, the loaded module, nvidia-smi: the check after the reboot
* :mod:`.cuda`       the CUDA toolkit plan
* :mod:`.nccl`       the NCCL/GLOO environment, interfaces, libnccl
* :mod:`.nccl_check` the all-reduce health check's layout and verdict
* :mod:`.report`     the results table

The roles ``nvidia_driver``, ``cuda_toolkit`` and ``nccl`` call them through the filter plugin
``plugins/filter/r1deploy_gpustack.py``; the unit tests call them directly. Pure: no I/O, no Ansible.
Compute-capability parsing comes from ``r1deploy.planner.gpus`` (the planner owns it); dtype and
memory rules stay in the planner.

Every function that validates returns (or raises with) messages that name the variable to change
and the fix; the roles prefix them with the host name. ``from r1deploy import gpustack`` keeps
giving every public name below.
"""

from __future__ import annotations

from r1deploy.gpustack.cuda import (
    CUDA_MIN_BRANCH,
    CUDA_MIN_CC,
    DISTRO_CUDA,
    cuda_major_problems,
    cuda_plan,
    parse_cuda_version,
)
from r1deploy.gpustack.driver import (
    DEBIAN12_DISTRO_BRANCH,
    DRIVER_SOURCES,
    FLAVOURS,
    LAST_BRANCH_BELOW_TURING,
    MIN_BRANCH_FOR_CC,
    OPEN_MODULE_MIN_BRANCH,
    OPEN_MODULE_MIN_CC,
    OPEN_MODULE_REQUIRED_CC,
    PROPRIETARY_LAST_BRANCH,
    DriverOptions,
    allowed_flavours,
    driver_packages,
    driver_plan,
)
from r1deploy.gpustack.gpus import (
    BLACKWELL_CC,
    CC,
    TURING_CC,
    VOLTA_CC,
    GpuStackError,
    branch_of,
    cc_text,
    device_cc,
    normalise_gpu_fact,
)
from r1deploy.gpustack.holds import hold_packages, versionlock_lines
from r1deploy.gpustack.nccl import (
    NCCL_DEBUG_LEVELS,
    host_ifaces,
    iface_for_ip,
    libnccl_mismatched,
    libnccl_plan,
    nccl_env,
    nccl_socket_ifname,
)
from r1deploy.gpustack.nccl_check import (
    DEFAULT_FLOORS_GBPS,
    nccl_check_layout,
    nccl_check_report,
    nccl_link_type,
    nccl_verdict,
    parse_nccl_transports,
)
from r1deploy.gpustack.oses import (
    NVIDIA_REPO_BASE,
    SUPPORTED_OS,
    OsTarget,
    headers_packages,
    headers_packages_for,
    nvidia_repo,
    os_target,
    pkg_of_os_family,
)
from r1deploy.gpustack.report import format_results
from r1deploy.gpustack.verify import SMI_QUERY, parse_driver_version_file, secure_boot_state, verify_driver

__all__ = [
    "BLACKWELL_CC",
    "CC",
    "CUDA_MIN_BRANCH",
    "CUDA_MIN_CC",
    "DEBIAN12_DISTRO_BRANCH",
    "DEFAULT_FLOORS_GBPS",
    "DISTRO_CUDA",
    "DRIVER_SOURCES",
    "FLAVOURS",
    "LAST_BRANCH_BELOW_TURING",
    "MIN_BRANCH_FOR_CC",
    "NCCL_DEBUG_LEVELS",
    "NVIDIA_REPO_BASE",
    "OPEN_MODULE_MIN_BRANCH",
    "OPEN_MODULE_MIN_CC",
    "OPEN_MODULE_REQUIRED_CC",
    "PROPRIETARY_LAST_BRANCH",
    "SMI_QUERY",
    "SUPPORTED_OS",
    "TURING_CC",
    "VOLTA_CC",
    "DriverOptions",
    "GpuStackError",
    "OsTarget",
    "allowed_flavours",
    "branch_of",
    "cc_text",
    "cuda_major_problems",
    "cuda_plan",
    "device_cc",
    "driver_packages",
    "driver_plan",
    "format_results",
    "headers_packages",
    "headers_packages_for",
    "hold_packages",
    "host_ifaces",
    "iface_for_ip",
    "libnccl_mismatched",
    "libnccl_plan",
    "nccl_check_layout",
    "nccl_check_report",
    "nccl_env",
    "nccl_link_type",
    "nccl_socket_ifname",
    "nccl_verdict",
    "normalise_gpu_fact",
    "nvidia_repo",
    "os_target",
    "parse_cuda_version",
    "parse_driver_version_file",
    "parse_nccl_transports",
    "pkg_of_os_family",
    "secure_boot_state",
    "verify_driver",
    "versionlock_lines",
]
