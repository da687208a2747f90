"""NCCL on the hosts: the NCCL/GLOO environment every host shares (/etc/r1deploy/nccl.env), each host's
cluster interface, and the optional system libnccl matching a CUDA major.

Facts and sources: shared/reference/v100-stack-research.md section 3 (NCCL/GLOO interface variables
and how vLLM's Ray executor copies ``NCCL_*`` to workers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from r1deploy.gpustack.cuda import cuda_major_problems
from r1deploy.gpustack.gpus import GpuStackError, as_bool, normalise_gpu_fact
from r1deploy.gpustack.oses import nvidia_repo, os_target_of

NCCL_DEBUG_LEVELS = ("", "VERSION", "WARN", "INFO", "ABORT", "TRACE")
_ENV_KEY_RE = re.compile(r"^(NCCL|GLOO|UCX|TORCH_NCCL|TORCH_DISTRIBUTED)_[A-Z0-9_]+$")


def iface_for_ip(interfaces: Mapping[str, Any], ip: str) -> str:
    """The interface that carries ``ip``.

    ``interfaces``: {name: ansible_facts[name]} (keys ipv4 / ipv4_secondaries).
    """
    for name, data in sorted(interfaces.items()):
        if not isinstance(data, Mapping):
            continue
        addrs = []
        for key in ("ipv4", "ipv4_secondaries"):
            v = data.get(key)
            if isinstance(v, Mapping):
                addrs.append(v)
            elif isinstance(v, list):
                addrs.extend(a for a in v if isinstance(a, Mapping))
        if any(a.get("address") == ip for a in addrs):
            return str(data.get("device") or name)
    return ""


def host_ifaces(
    hosts: Mapping[str, Mapping[str, Any]],
    ip_key: str = "r1deploy_node_ip",
    overrides: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Each host's interface for its cluster address.

    ``hosts``: {host: that host's variables (Ansible hostvars), read: ``ansible_facts`` and ``ip_key``};
    ``overrides``: {host: address} replacing ``ip_key`` (a per-host nccl_node_ip).
    Returns {"ifaces": {host: name or ""}, "errors": [...]}.
    """
    ifaces: dict[str, str] = {}
    errors: list[str] = []
    for host in sorted(hosts):
        hv = hosts[host]
        facts = hv.get("ansible_facts") or {}
        ip = str((overrides or {}).get(host) or hv.get(ip_key) or "")
        if not facts.get("interfaces"):
            errors.append(
                f"{host}: no network facts (a --limit run without cached facts): run once without --limit, "
                "or set nccl_socket_ifname explicitly"
            )
            ifaces[host] = ""
            continue
        if not ip:
            errors.append(f"{host}: {ip_key} is not set: set it in the inventory (docs/architecture.md)")
            ifaces[host] = ""
            continue
        interfaces = {n: facts.get(n.replace("-", "_").replace(".", "_")) for n in facts["interfaces"]}
        ifaces[host] = iface_for_ip(interfaces, ip)
    return {"ifaces": ifaces, "errors": errors}


def nccl_socket_ifname(host_ifaces: Mapping[str, str], requested: str) -> dict[str, Any]:
    """``NCCL_SOCKET_IFNAME`` for the cluster.

    vLLM's Ray executor copies the head's ``NCCL_*`` variables to every worker, so the value must be
    valid on all hosts. ``auto``: the exact names of the interfaces that carry each host's
    ``r1deploy_node_ip`` (``=eth1`` or ``=eth1,ens5``). ``host_ifaces``: {host: interface or ""}.
    """
    if requested != "auto":
        return {"value": requested, "errors": []}
    missing = sorted(h for h, i in host_ifaces.items() if not i)
    if missing:
        return {
            "value": "",
            "errors": [
                f"no interface carries r1deploy_node_ip on {', '.join(missing)}: fix r1deploy_node_ip or set "
                "nccl_socket_ifname (and nccl_gloo_socket_ifname) for those hosts"
            ],
        }
    names = sorted(set(host_ifaces.values()))
    return {"value": "=" + ",".join(names) if names else "", "errors": []}


def nccl_env(options: Mapping[str, Any], host_iface: str, cluster_ifname: str) -> dict[str, Any]:
    """The ordered environment of /etc/r1deploy/nccl.env and any refusals.

    options: socket_ifname, gloo_socket_ifname, ib_hca, ib_disable, debug, debug_subsys, nvls_enable,
    extra (dict).
    """
    errors: list[str] = []
    env: dict[str, str] = {}
    sock = str(options.get("socket_ifname", "auto"))
    env_sock = cluster_ifname if sock == "auto" else sock
    if env_sock:
        env["NCCL_SOCKET_IFNAME"] = env_sock
    gloo = str(options.get("gloo_socket_ifname", "auto"))
    # GLOO takes exact interface names (no NCCL-style prefixes); vLLM does not copy it to Ray workers,
    # so each host names its own.
    gloo_val = host_iface if gloo == "auto" else gloo
    if gloo_val:
        env["GLOO_SOCKET_IFNAME"] = gloo_val
    hca = str(options.get("ib_hca", "") or "")
    if hca:
        env["NCCL_IB_HCA"] = hca
    ib_disable = options.get("ib_disable", "")
    if str(ib_disable) != "":
        env["NCCL_IB_DISABLE"] = "1" if as_bool(ib_disable) else "0"
    nvls = options.get("nvls_enable", "")
    if str(nvls) != "":
        env["NCCL_NVLS_ENABLE"] = "1" if as_bool(nvls) else "0"
    debug = str(options.get("debug", "") or "").upper()
    if debug not in NCCL_DEBUG_LEVELS:
        errors.append(f"nccl_debug is {debug!r}; use '' (off) or one of {', '.join(NCCL_DEBUG_LEVELS[1:])}")
    elif debug:
        env["NCCL_DEBUG"] = debug
        subsys = str(options.get("debug_subsys", "") or "")
        if subsys:
            env["NCCL_DEBUG_SUBSYS"] = subsys
    for key, value in (options.get("extra") or {}).items():
        if not _ENV_KEY_RE.match(str(key)):
            errors.append(
                f"nccl_env_extra key {key!r} is not an NCCL/GLOO/UCX/TORCH_NCCL variable name: remove it"
            )
            continue
        text = str(value)
        if "\n" in text or '"' in text:
            errors.append(f"nccl_env_extra value of {key} contains a newline or a double quote")
            continue
        env[str(key)] = text
    for key in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_HCA"):
        if key in env and not re.fullmatch(r"[\^=]?[A-Za-z0-9_.:@\-]+(,[A-Za-z0-9_.:@\-]+)*", env[key]):
            errors.append(f"{key} value {env[key]!r} is not an interface list")
    return {"env": env, "errors": errors}


def libnccl_plan(gpus: Any, os_facts: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """libnccl packages matching a CUDA major. options: enabled, dev, cuda_major, repo_url, repo_key_url."""
    fact = normalise_gpu_fact(gpus)
    plan: dict[str, Any] = {
        "action": "none",
        "reason": "",
        "errors": [],
        "packages": [],
        "repo": {},
        "pkg": "",
    }
    if fact["count"] == 0:
        plan.update(action="skip", reason="CPU-only host (r1deploy_gpus.count is 0): no libnccl")
        return plan
    if not as_bool(options.get("enabled", False)):
        plan.update(action="skip", reason="nccl_libnccl_enabled is false: torch's wheels bring NCCL")
        return plan
    try:
        major = int(str(options.get("cuda_major", "12")))
    except ValueError:
        plan["errors"].append(f"nccl_cuda_major is {options.get('cuda_major')!r}; use a number such as 12")
        return plan
    plan["errors"].extend(cuda_major_problems(major, fact, "nccl_cuda_major"))
    try:
        target = os_target_of(os_facts)
    except GpuStackError as exc:
        plan["errors"].append(str(exc))
        return plan
    dev = as_bool(options.get("dev", False))
    if target.pkg == "apt":
        pkgs = ["libnccl2"] + (["libnccl-dev"] if dev else [])
        # apt_preferences: a version pin is a prefix ("580.*") or a /regex/, not a glob.
        pin = f"/\\+cuda{major}\\./"
    else:
        pkgs = ["libnccl"] + (["libnccl-devel"] if dev else [])
        pin = f"*+cuda{major}.*"
    plan.update(
        action="install" if not plan["errors"] else "none",
        reason=f"libnccl built for CUDA {major} from NVIDIA's repository",
        packages=pkgs,
        version_glob=pin,
        cuda_major=major,
        pkg=target.pkg,
        repo=nvidia_repo(target, str(options.get("repo_url") or ""), str(options.get("repo_key_url") or "")),
    )
    return plan


def libnccl_mismatched(installed: Mapping[str, Any], packages: Sequence[str], cuda_major: int) -> list[str]:
    """Installed libnccl packages (``package_facts``) built for another CUDA major than ``cuda_major``."""
    wrong = []
    for name in packages:
        versions = [str(v.get("version", "")) for v in installed.get(name) or []]
        if any(f"+cuda{cuda_major}." not in v for v in versions):
            wrong.append(name)
    return wrong
