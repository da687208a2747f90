"""Ansible filters over the r1deploy.gpustack package (driver, CUDA and NCCL selection rules); no rule
lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

try:
    from r1deploy import gpustack
except ImportError:  # running from a checkout without `pip install .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from r1deploy import gpustack


def _wrap(func: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except gpustack.GpuStackError as exc:
            raise AnsibleFilterError(str(exc)) from exc

    call.__name__ = func.__name__
    call.__doc__ = func.__doc__
    return call


def gpu_fact(value: Any) -> dict[str, Any] | None:
    """The normalised GPU fact, or None when absent or malformed (the role then fails with a fix)."""
    try:
        return gpustack.normalise_gpu_fact(value)
    except gpustack.GpuStackError:
        return None


def gpu_fact_problem(value: Any) -> str:
    try:
        gpustack.normalise_gpu_fact(value)
    except gpustack.GpuStackError as exc:
        return str(exc)
    return ""


def smi_query(_: Any = None) -> str:
    """The nvidia-smi --query-gpu fields the GPU fact and the verify step parse."""
    return gpustack.SMI_QUERY


def headers_packages(os_family: str, kernel: str) -> list[str]:
    """The kernel header packages of ``kernel`` on an OS family (``ansible_facts['os_family']``).

    The first is the one to look for; the nvidia_driver role installs them all (its plan has the same).
    """
    return gpustack.headers_packages_for(gpustack.pkg_of_os_family(os_family), kernel)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        g = gpustack
        return {
            "r1deploy_gpustack_gpu_fact": gpu_fact,
            "r1deploy_gpustack_gpu_fact_problem": gpu_fact_problem,
            "r1deploy_gpustack_driver_plan": _wrap(g.driver_plan),
            "r1deploy_gpustack_headers_packages": _wrap(headers_packages),
            "r1deploy_gpustack_hold_packages": _wrap(g.hold_packages),
            "r1deploy_gpustack_versionlock": _wrap(g.versionlock_lines),
            "r1deploy_gpustack_secure_boot": _wrap(g.secure_boot_state),
            "r1deploy_gpustack_driver_version": _wrap(g.parse_driver_version_file),
            "r1deploy_gpustack_verify_driver": _wrap(g.verify_driver),
            "r1deploy_gpustack_smi_query": smi_query,
            "r1deploy_gpustack_cuda_plan": _wrap(g.cuda_plan),
            "r1deploy_gpustack_libnccl_plan": _wrap(g.libnccl_plan),
            "r1deploy_gpustack_libnccl_mismatched": _wrap(g.libnccl_mismatched),
            "r1deploy_gpustack_iface_for_ip": _wrap(g.iface_for_ip),
            "r1deploy_gpustack_host_ifaces": _wrap(g.host_ifaces),
            "r1deploy_gpustack_socket_ifname": _wrap(g.nccl_socket_ifname),
            "r1deploy_gpustack_nccl_env": _wrap(g.nccl_env),
            "r1deploy_gpustack_nccl_verdict": _wrap(g.nccl_verdict),
            "r1deploy_gpustack_nccl_check_layout": _wrap(g.nccl_check_layout),
            "r1deploy_gpustack_nccl_check_report": _wrap(g.nccl_check_report),
            "r1deploy_gpustack_format_results": _wrap(g.format_results),
        }
