"""Preflight rules: stage 1 (inventory, no facts) and stage 2 (host facts). Pure Python.

The preflight role collects plain dictionaries (hostvars subsets, facts, probe outputs) and calls
:func:`check_inventory` and :func:`check_hosts` through the filters in plugins/filter/
r1deploy_planner.py. Every finding names the host, the variable or fact, and the fix.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Any

from r1deploy import oses, runtime
from r1deploy.planner import memory as mem
from r1deploy.planner.findings import Finding
from r1deploy.planner.gpus import OPEN_MODULES_MIN_CC, GpuError, is_volta, load_gpu, match_smi_name, parse_cc
from r1deploy.planner.models import ModelError, load_model
from r1deploy.planner.plan import ANSIBLE_LABELS, PlanRequest, make_plan
from r1deploy.planner.variables import SHARED_COPIES

# ansible-core this project is tested with (pyproject.toml pins >=2.19,<2.20).
MIN_ANSIBLE = (2, 19, 0)
TESTED_ANSIBLE_BELOW = (2, 20, 0)
# OS releases the roles are written for: r1deploy.oses, the one list (preflight_supported_os overrides it).
SUPPORTED_OS = oses.supported_versions()
# The Pythons the serving venv can have: those r1deploy has locks for (r1deploy.runtime.LOCK_PYTHONS,
# the one home of that rule); Ray needs the same minor on every node.
_LOCKED = sorted(tuple(int(x) for x in v.split(".")) for vs in runtime.LOCK_PYTHONS.values() for v in vs)
PYTHON_RANGE = ((_LOCKED[0][0], _LOCKED[0][1]), (_LOCKED[-1][0], _LOCKED[-1][1]))

_TYPE_NAMES = {
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "path": "a path",
    "list": "a list",
    "dict": "a dictionary",
}


def _f(severity: str, code: str, host: str, message: str, subject: str = "", fix: str = "") -> Finding:
    return Finding(severity, code, message, subject, fix, host)  # type: ignore[arg-type]


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(text))[:3])


# ---- stage 1 ---------------------------------------------------------------------------------------


def type_problem(value: Any, expected: str) -> str | None:
    """Why ``value`` is not of argument-spec type ``expected`` (None when it is, or is null)."""
    if value is None or expected in ("", "raw", "any"):
        return None
    if expected == "bool":
        ok = isinstance(value, bool)
    elif expected == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif expected in ("str", "path"):
        ok = isinstance(value, str)
    elif expected == "list":
        ok = isinstance(value, list)
    elif expected == "dict":
        ok = isinstance(value, dict)
    else:
        return None
    if ok:
        return None
    shown = f"the string {value!r}" if isinstance(value, str) else f"{type(value).__name__} {value!r}"
    return f"must be {_TYPE_NAMES.get(expected, expected)}, got {shown}"


def _type_fix(name: str, value: Any, expected: str) -> str:
    if expected == "bool" and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return f"write {name}: {str(value.lower() in ('true', 'yes')).lower()} without quotes"
    if expected in ("int", "float") and isinstance(value, str):
        return f"write the number without quotes ({name}: {value.strip()})"
    if expected in ("str", "path") and not isinstance(value, str):
        return f'quote the value ({name}: "{value}")'
    return f"give {name} {_TYPE_NAMES.get(expected, expected)}"


def check_variables(
    host: str, variables: dict[str, Any], known: dict[str, str], prefixes: list[str]
) -> list[Finding]:
    """Typed variables, and unknown/misspelled ones among those with an r1deploy or role prefix."""
    out: list[Finding] = []
    names = sorted(known)
    for name in sorted(variables):
        value = variables[name]
        if name in known:
            problem = type_problem(value, known[name])
            if problem:
                out.append(
                    _f(
                        "error",
                        "var-type",
                        host,
                        f"{name} {problem}",
                        name,
                        _type_fix(name, value, known[name]),
                    )
                )
            continue
        if name.startswith("__") or not any(name.startswith(p) for p in prefixes):
            continue
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        fix = (
            f"did you mean {close[0]}?" if close else "remove it, or check the role's meta/argument_specs.yml"
        )
        out.append(
            _f(
                "strict",
                "var-unknown",
                host,
                f"unknown variable {name} (no role or document defines it)",
                name,
                fix,
            )
        )
    return out


def shared_copy_findings(variables_of: dict[str, dict[str, Any]]) -> list[Finding]:
    """A role's copy of a shared setting (ray_head_port, vllm_server_venv, ...) set in the inventory:
    refused once per variable, naming the shared r1deploy_* setting every role reads."""
    hosts_of: dict[str, list[str]] = {}
    for host in sorted(variables_of):
        for name in variables_of[host]:
            if name in SHARED_COPIES:
                hosts_of.setdefault(name, []).append(host)
    out = []
    for name, hosts in sorted(hosts_of.items()):
        shared = SHARED_COPIES[name]
        where = ", ".join(hosts) if len(hosts) <= 3 else f"{hosts[0]} and {len(hosts) - 1} other hosts"
        out.append(
            _f(
                "error",
                "var-shared-copy",
                where,
                f"{name} is set in the inventory, but it is one role's copy of the shared {shared}: "
                "the other roles would not see it and the cluster would disagree",
                name,
                f"set {shared} instead (group_vars/all; roles/r1deploy) and remove {name}",
            )
        )
    return out


def _ip_ok(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def check_inventory(inv: dict[str, Any]) -> dict[str, Any]:
    """Stage 1. ``inv``: ansible_version, groups {name: [hosts]}, hosts {host: {var: value}},
    known_variables {name: type}, prefixes [..], ignore_errors (bool), plan_defaults {..}.

    Returns {findings, errors, warnings, plan}: strict findings are errors unless ignore_errors."""
    groups: dict[str, list[str]] = {k: list(v or []) for k, v in (inv.get("groups") or {}).items()}
    hosts: dict[str, dict[str, Any]] = inv.get("hosts") or {}
    head = groups.get("ray_head", [])
    gpu_nodes = groups.get("gpu_nodes", [])
    findings = ansible_version_findings(str(inv.get("ansible_version") or ""))
    findings += group_findings(groups)
    findings += address_findings(sorted(set(gpu_nodes) | set(groups.get("frontend", []))), hosts)
    known = inv.get("known_variables") or {}
    prefixes = list(inv.get("prefixes") or ["r1deploy_"])
    for h in sorted(hosts):
        findings += check_variables(h, hosts[h].get("__variables", hosts[h]), known, prefixes)
    findings += shared_copy_findings({h: hosts[h].get("__variables", hosts[h]) for h in hosts})
    plan = None
    if gpu_nodes and head:
        findings += cluster_setting_findings(gpu_nodes, hosts)
        plan = make_plan_for_inventory(hosts.get(head[0], {}), len(gpu_nodes), inv.get("plan_defaults") or {})
        findings += _plan_findings(plan, f"gpu_nodes ({', '.join(gpu_nodes)})")
        findings += open_modules_setting_findings(_plan_cc(plan), gpu_nodes, hosts)
    return _result(findings, inv.get("ignore_errors") is True, plan=plan)


def ansible_version_findings(version: str) -> list[Finding]:
    """ansible-core older than the project's floor is refused; a newer series than tested is reported."""
    if not version:
        return []
    if _version_tuple(version) < MIN_ANSIBLE:
        return [
            _f(
                "error",
                "ansible-version",
                "controller",
                f"ansible-core {version} is older than {'.'.join(map(str, MIN_ANSIBLE))}",
                "ansible_version",
                "install the project's pins: pip install -e . (ansible-core 2.19)",
            )
        ]
    if _version_tuple(version) >= TESTED_ANSIBLE_BELOW:
        return [
            _f(
                "warning",
                "ansible-untested",
                "controller",
                f"ansible-core {version} is newer than the tested 2.19 series",
                "ansible_version",
            )
        ]
    return []


def group_findings(groups: dict[str, list[str]]) -> list[Finding]:
    """The inventory contract (docs/architecture.md): one ray_head, ray_head and ray_workers children of
    gpu_nodes and nothing else in it, a non-empty frontend."""
    head = groups.get("ray_head", [])
    workers = groups.get("ray_workers", [])
    gpu_nodes = groups.get("gpu_nodes", [])
    out: list[Finding] = []
    if len(head) != 1:
        out.append(
            _f(
                "error",
                "ray-head-count",
                "ray_head",
                f"the ray_head group must hold exactly one host, "
                f"it holds {len(head)}" + (f" ({', '.join(head)})" if head else ""),
                "groups.ray_head",
                "put the one host that runs the Ray head and the vLLM API server in ray_head, "
                "the others "
                "in ray_workers",
            )
        )
    if not groups.get("frontend"):
        out.append(
            _f(
                "error",
                "frontend-empty",
                "frontend",
                "the frontend group is empty",
                "groups.frontend",
                "add the host that serves Open WebUI behind nginx (it may be the head)",
            )
        )
    for h in sorted(set(head) & set(workers)):
        out.append(
            _f(
                "error",
                "host-two-roles",
                h,
                "the host is in both ray_head and ray_workers",
                "groups.ray_head / groups.ray_workers",
                "keep it in one of the two groups",
            )
        )
    for h in sorted((set(head) | set(workers)) - set(gpu_nodes)):
        out.append(
            _f(
                "error",
                "not-gpu-node",
                h,
                "the host runs Ray but is not in gpu_nodes",
                "groups.gpu_nodes",
                "make ray_head and ray_workers children of gpu_nodes (see inventories/sample/hosts.yml)",
            )
        )
    for h in sorted(set(gpu_nodes) - set(head) - set(workers)):
        out.append(
            _f(
                "error",
                "gpu-node-no-role",
                h,
                "the host is in gpu_nodes but in neither ray_head nor ray_workers",
                "groups.gpu_nodes",
                "put it in ray_workers",
            )
        )
    return out


def address_findings(cluster: list[str], hosts: dict[str, dict[str, Any]]) -> list[Finding]:
    """One machine, one inventory name (two names would configure its services twice); every host has a
    valid r1deploy_node_ip."""
    out: list[Finding] = []
    for key in ("ansible_host", "r1deploy_node_ip"):
        seen: dict[str, str] = {}
        for h in cluster:
            addr = hosts.get(h, {}).get(key)
            if addr in (None, ""):
                continue
            if str(addr) in seen:
                out.append(
                    _f(
                        "error",
                        "duplicate-address",
                        h,
                        f"{key} {addr} is also {seen[str(addr)]}'s",
                        key,
                        "one machine must have one inventory name; list that name in every group "
                        "it belongs to",
                    )
                )
            else:
                seen[str(addr)] = h
    for h in cluster:
        ip = hosts.get(h, {}).get("r1deploy_node_ip")
        if ip in (None, ""):
            out.append(
                _f(
                    "error",
                    "node-ip-missing",
                    h,
                    "r1deploy_node_ip is not set",
                    "r1deploy_node_ip",
                    "set it to the host's address on the private cluster network",
                )
            )
        elif not _ip_ok(ip):
            out.append(
                _f(
                    "error",
                    "node-ip-invalid",
                    h,
                    f"r1deploy_node_ip {ip!r} is not an IP address",
                    "r1deploy_node_ip",
                    "write an IPv4 or IPv6 address, e.g. 10.0.0.11",
                )
            )
    return out


# Cluster-wide settings: a host_vars override on one GPU node is a mistake (r1deploy needs identical nodes).
CLUSTER_SETTINGS = ("r1deploy_model", "r1deploy_gpu_model", "r1deploy_gpus_per_node")


def cluster_setting_findings(gpu_nodes: list[str], hosts: dict[str, dict[str, Any]]) -> list[Finding]:
    out: list[Finding] = []
    for var in CLUSTER_SETTINGS:
        values = {h: hosts.get(h, {}).get(var) for h in gpu_nodes}
        if len({repr(v) for v in values.values()}) > 1:
            detail = ", ".join(f"{h}={v!r}" for h, v in sorted(values.items()))
            out.append(
                _f(
                    "error",
                    "var-differs",
                    "gpu_nodes",
                    f"{var} differs between GPU nodes ({detail})",
                    var,
                    "set it once in group_vars/all; r1deploy needs identical nodes",
                )
            )
    return out


def _plan_findings(plan: dict[str, Any], where: str, suffix: str = "") -> list[Finding]:
    """The plan's findings, placed on ``where`` (the GPU nodes)."""
    return [
        Finding(fd["severity"], fd["code"], fd["message"] + suffix, fd["subject"], fd["fix"], where)
        for fd in plan.get("findings", [])
    ]


def _plan_cc(plan: dict[str, Any] | None) -> str | None:
    return ((plan or {}).get("gpu") or {}).get("compute_capability")


def open_modules_setting_findings(
    cc: str | None, gpu_nodes: list[str], hosts: dict[str, dict[str, Any]]
) -> list[Finding]:
    """nvidia_driver_flavour: open on GPUs without GSP (below 7.5) cannot load (research 2.1)."""
    if not cc or parse_cc(cc) >= OPEN_MODULES_MIN_CC:
        return []
    return [
        _f(
            "error",
            "open-modules-volta",
            h,
            f"nvidia_driver_flavour is open, but compute capability {cc} GPUs need the "
            "proprietary "
            "kernel modules (the open modules need GSP: Turing and newer)",
            "nvidia_driver_flavour",
            "set nvidia_driver_flavour: proprietary (or auto)",
        )
        for h in gpu_nodes
        if str(hosts.get(h, {}).get("nvidia_driver_flavour", "")).lower() == "open"
    ]


def plan_request_from_vars(
    v: dict[str, Any], nodes: int, defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The planner input an inventory declares (stage 1; stage 2 adds the facts)."""
    d = defaults or {}

    def pick(name: str) -> Any:
        value = v.get(name)
        return d.get(name) if value is None else value

    gpu = pick("r1deploy_gpu_model")
    device = "cpu" if gpu in (None, "") else "gpu"
    return {
        "model": pick("r1deploy_model"),
        "gpu": gpu if device == "gpu" else None,
        "device": device,
        "nodes": nodes,
        "gpus_per_node": pick("r1deploy_gpus_per_node") if device == "gpu" else 1,
        "tp": pick("vllm_server_tensor_parallel_size"),
        "pp": pick("vllm_server_pipeline_parallel_size"),
        "dtype": pick("vllm_server_dtype"),
        "max_model_len": pick("vllm_server_max_model_len"),
        "gpu_memory_utilization": pick("vllm_server_gpu_memory_utilization"),
        "max_num_seqs": pick("vllm_server_max_num_seqs"),
        "kv_cache_memory_bytes": pick("vllm_server_kv_cache_memory_bytes"),
        "disable_custom_all_reduce": pick("vllm_server_disable_custom_all_reduce"),
    }


def make_plan_for_inventory(v: dict[str, Any], nodes: int, defaults: dict[str, Any]) -> dict[str, Any]:
    req = plan_request_from_vars(v, nodes, defaults)
    if req["model"] in (None, ""):
        return {
            "ok": False,
            "findings": [
                Finding(
                    "error",
                    "model-missing",
                    "no model declared",
                    "r1deploy_model",
                    "set r1deploy_model to a registry name or a controller path to config.json",
                ).as_dict()
            ],
        }
    return make_plan(PlanRequest.from_dict(req, ANSIBLE_LABELS))


def _merge_hosts(findings: list[Finding]) -> list[Finding]:
    """One finding per problem: the same finding on several hosts (a group_vars mistake) lists them."""
    merged: dict[tuple[str, ...], list[str]] = {}
    for f in findings:
        merged.setdefault((f.severity, f.code, f.message, f.subject, f.fix), [])
        if f.host and f.host not in merged[(f.severity, f.code, f.message, f.subject, f.fix)]:
            merged[(f.severity, f.code, f.message, f.subject, f.fix)].append(f.host)
    return [Finding(k[0], k[1], k[2], k[3], k[4], ", ".join(h)) for k, h in merged.items()]  # type: ignore[arg-type]


def _result(findings: list[Finding], ignore_errors: bool, **extra: Any) -> dict[str, Any]:
    findings = _merge_hosts(findings)
    errors = [
        f.text for f in findings if f.severity == "error" or (f.severity == "strict" and not ignore_errors)
    ]
    warnings = [f.text for f in findings if f.text not in errors]
    return {
        "ok": not errors,
        "errors": errors,
        "warnings": warnings,
        "findings": [f.as_dict() for f in findings],
        **extra,
    }


# ---- stage 2 ---------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("tesla", "").replace("nvidia", ""))


def gpu_name_matches(declared: str, device_name: str) -> bool:
    """Does a device name from nvidia-smi or lspci belong to the declared registry GPU?"""
    try:
        spec = load_gpu(declared)
    except GpuError:
        return False
    smi = match_smi_name(device_name)
    if smi is not None:
        return smi.name == spec.name
    return any(_norm(n) in _norm(device_name) for n in spec.smi_names)


def cuda_major(text: str) -> int | None:
    """CUDA major version in "12.8", "13.0.1", "cu130", "2.10.0+cu128", "cuda-toolkit-13-0"."""
    m = re.search(r"cu(\d{2,3})\b", str(text))
    if m:
        return int(m.group(1)[:-1])
    m = re.search(r"(?:cuda[-_a-z]*)?(\d{2})[.-]\d", str(text).lower())
    return int(m.group(1)) if m else None


def _mount_for(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for m in mounts or []:
        mp = str(m.get("mount", ""))
        if (path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/") and (
            best is None or len(mp) > len(str(best.get("mount", "")))
        ):
            best = m
    return best


def _iface_match(spec: str, ifaces: list[str]) -> list[str]:
    """NCCL_SOCKET_IFNAME syntax: comma-separated prefixes, ``=name`` exact, ``^`` excludes."""
    if not spec:
        return ifaces
    exclude = spec.startswith("^")
    body = spec[1:] if exclude else spec
    exact = body.startswith("=")
    items = [x for x in (body[1:] if exact else body).split(",") if x]
    hit = [i for i in ifaces if any((i == x) if exact else i.startswith(x) for x in items)]
    return [i for i in ifaces if i not in hit] if exclude else hit


def parse_ss_listeners(text: str) -> list[dict[str, Any]]:
    """``ss -H -ltnp`` -> [{port, address, process}] (process "" when ss could not name it)."""
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] != "LISTEN":
            continue
        local = parts[3]
        addr, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        m = re.search(r'users:\(\("([^"]+)"', line)
        out.append({"port": int(port), "address": addr, "process": m.group(1) if m else ""})
    return out


def parse_ip_addr(text: str) -> dict[str, list[str]]:
    """``ip -o addr show`` -> {interface: [addresses]}."""
    out: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("inet", "inet6"):
            iface = parts[1].split("@")[0]
            out.setdefault(iface, []).append(parts[3].split("/")[0])
    return out


def parse_df(text: str) -> list[dict[str, Any]]:
    """Lines "<path> <mount point> <size bytes> <available bytes>" (df -P -B1 per path) -> mounts."""
    mounts: dict[str, dict[str, Any]] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            mounts[parts[1]] = {
                "mount": parts[1],
                "size_total": int(parts[2]),
                "size_available": int(parts[3]),
            }
    return list(mounts.values())


def busy_ports(listeners: list[dict[str, Any]], required: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Required ports held by a process that is not one of r1deploy's own services."""
    busy = []
    for want in required or []:
        try:
            port = int(want.get("port"))
        except (TypeError, ValueError):
            continue
        owners = [str(o) for o in want.get("owners") or []]
        for lst in listeners:
            if lst["port"] == port and not any(lst["process"].startswith(o) for o in owners if o):
                busy.append({**want, "port": port, "process": lst["process"] or "an unnamed process"})
                break
    return busy


def check_hosts(data: dict[str, Any]) -> dict[str, Any]:
    """Stage 2. ``data``: settings {..} and hosts {host: {...probes...}}; see roles/preflight/README.md."""
    s = data.get("settings") or {}
    hosts: dict[str, dict[str, Any]] = data.get("hosts") or {}
    gpu_hosts = [h for h in sorted(hosts) if hosts[h].get("gpu_node")]
    declared_gpu = s.get("r1deploy_gpu_model")
    device = "cpu" if declared_gpu in (None, "") else "gpu"
    try:
        model = load_model(str(s.get("r1deploy_model") or ""))
    except ModelError:
        model = None  # stage 1 already refused it

    findings: list[Finding] = []
    for h in gpu_hosts:
        findings += gpu_findings(h, hosts[h].get("gpus") or {}, declared_gpu, s.get("r1deploy_gpus_per_node"))
        findings += cuda_volta_findings(h, hosts[h])
    findings += mixed_gpu_findings(
        {h: {str(d.get("name", "")) for d in _devices(hosts[h])} for h in gpu_hosts}
    )
    plan = None
    if model is not None and device == "gpu" and s.get("ray_head") in hosts:
        plan = replan_with_facts(s, [d for h in gpu_hosts for d in _devices(hosts[h])], len(gpu_hosts))
    if plan is not None:
        findings += [
            f
            for f in _plan_findings(plan, "gpu_nodes", " (with the hosts' GPU facts)")
            if f.severity == "error" or f.code not in _STAGE1_ONLY_PLAN_WARNINGS
        ]
    findings += python_findings(_venv_pythons(s, hosts, gpu_hosts))
    supported = s.get("supported_os") or SUPPORTED_OS
    skew_max = float(s.get("max_clock_skew_s") or 0)
    for h in sorted(hosts):
        hv = hosts[h]
        if hv.get("df_output"):
            hv = {**hv, "mounts": parse_df(hv["df_output"]) + list(hv.get("mounts") or [])}
        findings += os_findings(h, hv, supported)
        findings += node_address_findings(h, hv)
        findings += shm_findings(h, hv)
        findings += clock_findings(h, hv, skew_max)
        findings += port_findings(h, hv)
        if hv.get("gpu_node"):
            findings += kernel_header_findings(h, hv)
            findings += disk_findings(h, hv, _disk_needs(hv, model, s))
    findings += venv_findings(
        {h: hosts[h]["venv_versions"] for h in gpu_hosts if hosts[h].get("venv_versions")}
    )
    return _result(findings, s.get("ignore_errors") is True, plan=plan)


def _devices(report: dict[str, Any]) -> list[dict[str, Any]]:
    return list((report.get("gpus") or {}).get("devices") or [])


def _ccs(devices: list[dict[str, Any]]) -> list[str]:
    return [d["compute_capability"] for d in devices if d.get("compute_capability")]


def gpu_findings(host: str, g: dict[str, Any], declared_gpu: Any, per_node: Any) -> list[Finding]:
    """One GPU node's ``r1deploy_gpus`` fact against the inventory: count, model, driver flavour,
    persistence mode, NVSwitch."""
    device = "cpu" if declared_gpu in (None, "") else "gpu"
    count = int(g.get("count") or 0)
    devs = g.get("devices") or []
    if device == "gpu" and count == 0:
        return [
            _f(
                "error",
                "no-gpu",
                host,
                "no NVIDIA GPU found (nvidia-smi and lspci see none)",
                "r1deploy_gpus.count",
                "check the hardware, or set r1deploy_gpu_model: null for a CPU-only site",
            )
        ]
    out: list[Finding] = []
    if device == "cpu" and count > 0:
        out.append(
            _f(
                "warning",
                "gpus-unused",
                host,
                f"{count} GPU(s) found but r1deploy_gpu_model is null: preflight checked a CPU plan, while "
                "the serving roles choose from the GPU fact and will use the GPUs",
                "r1deploy_gpu_model",
                "set r1deploy_gpu_model to this host's GPU so that preflight checks what gets deployed",
            )
        )
    if device == "gpu" and isinstance(per_node, int) and count != per_node:
        out.append(
            _f(
                "error",
                "gpu-count",
                host,
                f"{count} GPU(s) found ({g.get('source')}), the inventory declares {per_node}",
                "r1deploy_gpus_per_node / r1deploy_gpus.count",
                f"set r1deploy_gpus_per_node: {count} or fix the host",
            )
        )
    wrong = sorted(
        {
            str(d.get("name", ""))
            for d in devs
            if not gpu_name_matches(str(declared_gpu), str(d.get("name", "")))
        }
    )
    if device == "gpu" and wrong:
        out.append(
            _f(
                "error",
                "gpu-model",
                host,
                f"found {', '.join(map(repr, wrong))}, the inventory declares {declared_gpu}",
                "r1deploy_gpu_model / r1deploy_gpus.devices[].name",
                "set r1deploy_gpu_model to this host's GPU (r1deploy plan lists the known names)",
            )
        )
    flavour = (g.get("driver") or {}).get("flavour")
    if flavour == "open" and any(parse_cc(c) < OPEN_MODULES_MIN_CC for c in _ccs(devs)):
        out.append(
            _f(
                "error",
                "open-modules-volta",
                host,
                "the NVIDIA open kernel modules are loaded, but "
                "Volta GPUs need the proprietary modules (open modules need GSP, Turing and "
                "newer)",
                "r1deploy_gpus.driver.flavour",
                "install the proprietary R580 driver "
                "(nvidia-driver-580 / cuda-drivers-580, not *-open) and reboot",
            )
        )
    if any(not d.get("persistence_mode", True) for d in devs if "persistence_mode" in d):
        out.append(
            _f(
                "warning",
                "persistence-off",
                host,
                "GPU persistence mode is off (the nvidia_driver role enables nvidia-persistenced)",
                "r1deploy_gpus.devices[].persistence_mode",
            )
        )
    if g.get("nvswitch"):
        out.append(
            _f(
                "warning",
                "nvswitch",
                host,
                "NVSwitch present: nvidia-fabricmanager (same version as the driver) must run",
                "r1deploy_gpus.nvswitch",
            )
        )
    return out


def cuda_volta_findings(host: str, report: dict[str, Any]) -> list[Finding]:
    """CUDA 13 / cu13x builds have no sm_70 code (research section 2.1): refused on Volta."""
    g = report.get("gpus") or {}
    if not any(is_volta(parse_cc(c)) for c in _ccs(list(g.get("devices") or []))):
        return []
    out: list[Finding] = []
    for source, text in sorted((report.get("cuda_versions") or {}).items()):
        major = cuda_major(str(text))
        if major is not None and major >= 13:
            out.append(
                _f(
                    "error",
                    "cuda13-volta",
                    host,
                    f"{source} is CUDA {major} ({text}), which has no Volta (sm_70) support",
                    source,
                    "use CUDA 12.x: the 'volta' serving profile (torch cu128/cu126) and cuda-toolkit-12-x",
                )
            )
    return out


def mixed_gpu_findings(names: dict[str, set[str]]) -> list[Finding]:
    """vLLM shards evenly: every GPU node needs the same GPU type."""
    all_names = sorted({n for v in names.values() for n in v})
    if len(all_names) <= 1:
        return []
    detail = "; ".join(f"{h}: {', '.join(sorted(v))}" for h, v in sorted(names.items()) if v)
    return [
        _f(
            "error",
            "gpu-mixed",
            "gpu_nodes",
            f"GPU types differ across the cluster ({detail})",
            "r1deploy_gpus.devices[].name",
            "use identical GPUs on every GPU node (vLLM shards evenly)",
        )
    ]


# Plan warnings stage 1 already showed from the same inventory; with the facts they would repeat.
_STAGE1_ONLY_PLAN_WARNINGS = ("fp16-from-bf16", "seqs-exceed-kv")


def replan_with_facts(
    settings: dict[str, Any], devices: list[dict[str, Any]], nodes: int
) -> dict[str, Any] | None:
    """The plan again with what the hardware says: the lowest compute capability and the smallest
    memory of all GPU nodes (None when the facts know neither)."""
    ccs = sorted(set(_ccs(devices)))
    mems = [int(d["memory_mib"]) for d in devices if d.get("memory_mib")]
    if not ccs and not mems:
        return None
    req = plan_request_from_vars(settings, nodes, settings.get("plan_defaults") or {})
    if ccs:
        req["compute_capability"] = ccs[0]
    if mems:
        req["gpu_memory_mib"] = min(mems)
    return make_plan(PlanRequest.from_dict(req, ANSIBLE_LABELS))


def _venv_pythons(
    settings: dict[str, Any], hosts: dict[str, dict[str, Any]], gpu_hosts: list[str]
) -> dict[str, str]:
    """Each GPU node's serving-venv Python (r1deploy.runtime's rule), where the inventory decides it."""
    out = {}
    for h in gpu_hosts:
        hv = hosts[h]
        found = runtime.venv_python(
            str(hv.get("distribution", "")),
            str(hv.get("distribution_major_version", "")),
            hv.get("gpus") or {},
            str(settings.get("vllm_runtime_profile") or "auto"),
            str(settings.get("vllm_runtime_python") or ""),
        )
        if found:
            out[h] = found
    return out


def python_findings(versions: dict[str, str]) -> list[Finding]:
    """The serving venvs' Python (not Ansible's: Rocky 9 runs Ansible on 3.9 and the venv on 3.12): Ray
    refuses a cluster of mixed minors; r1deploy's locks cover :data:`PYTHON_RANGE`."""
    minors = {h: tuple(_version_tuple(v)[:2]) for h, v in versions.items()}
    out: list[Finding] = []
    if len(set(minors.values())) > 1:
        detail = ", ".join(f"{h}={'.'.join(map(str, v))}" for h, v in sorted(minors.items()))
        out.append(
            _f(
                "error",
                "python-differs",
                "gpu_nodes",
                f"the serving venvs' Python differs across GPU nodes ({detail}); Ray refuses a cluster "
                "of mixed versions",
                "vllm_runtime_python",
                "run every GPU node on the same OS release, or set vllm_runtime_python to the same "
                "CPython minor on all of them",
            )
        )
    lo, hi = PYTHON_RANGE
    for h, v in sorted(minors.items()):
        if not lo <= v <= hi:
            out.append(
                _f(
                    "error",
                    "python-range",
                    h,
                    f"the serving venv's Python {'.'.join(map(str, v))} is outside the "
                    f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]} r1deploy has locks for",
                    "vllm_runtime_python",
                    "leave vllm_runtime_python unset (the role picks the OS's supported Python)",
                )
            )
    return out


def os_findings(host: str, hv: dict[str, Any], supported: dict[str, list[Any]]) -> list[Finding]:
    os_name, os_ver = str(hv.get("distribution", "")), str(hv.get("distribution_version", ""))
    major = str(hv.get("distribution_major_version", ""))
    ok_versions = [str(x) for x in supported.get(os_name, [])]
    if not os_name or os_ver in ok_versions or major in ok_versions:
        return []
    listed = "; ".join(k + " " + ", ".join(map(str, v)) for k, v in supported.items())
    return [
        _f(
            "strict",
            "os-unsupported",
            host,
            f"{os_name} {os_ver} is not a supported OS ({listed})",
            "ansible_distribution",
            "use a supported release, or set r1deploy_ignore_preflight_errors: true to try anyway",
        )
    ]


def node_address_findings(host: str, hv: dict[str, Any]) -> list[Finding]:
    """r1deploy_node_ip is configured on the host, and the NCCL/GLOO interface selections match an
    interface that carries it."""
    out: list[Finding] = []
    ip = hv.get("node_ip")
    addrs = [str(a) for a in (hv.get("addresses") or [])]
    if ip and str(ip) not in addrs:
        out.append(
            _f(
                "error",
                "node-ip-absent",
                host,
                f"r1deploy_node_ip {ip} is not configured on the host "
                f"(it has {', '.join(addrs) or 'no address'})",
                "r1deploy_node_ip",
                "set r1deploy_node_ip to one of the host's cluster-network addresses",
            )
        )
    iface_ips: dict[str, list[str]] = hv.get("interface_addresses") or parse_ip_addr(
        hv.get("ip_output") or ""
    )
    ifaces = [str(i) for i in (hv.get("interfaces") or iface_ips)]
    for var, spec in sorted((hv.get("socket_ifnames") or {}).items()):
        if not spec or str(spec) == "auto":
            continue
        match = _iface_match(str(spec), [i for i in ifaces if i != "lo"])
        if not match:
            out.append(
                _f(
                    "error",
                    "ifname-missing",
                    host,
                    f"{var}={spec!r} matches no interface (the host has {', '.join(ifaces)})",
                    var,
                    "name the interface that carries r1deploy_node_ip",
                )
            )
        elif ip and str(ip) in addrs and not any(str(ip) in iface_ips.get(i, []) for i in match):
            out.append(
                _f(
                    "strict",
                    "ifname-not-node-ip",
                    host,
                    f"{var}={spec!r} selects {', '.join(match)}, which does not carry r1deploy_node_ip {ip}",
                    var,
                    "use the interface of the cluster network",
                )
            )
    return out


def shm_findings(host: str, hv: dict[str, Any]) -> list[Finding]:
    """NCCL and vLLM's workers exchange data through /dev/shm: at least min_shm_mib."""
    min_shm = int(hv.get("min_shm_mib") or 0)
    shm = hv.get("shm_bytes")
    if shm is None:
        shm = next(
            (m.get("size_total") for m in hv.get("mounts") or [] if m.get("mount") == "/dev/shm"), None
        )
    if not min_shm or shm is None or int(shm) >= min_shm * mem.MIB:
        return []
    return [
        _f(
            "strict",
            "shm-small",
            host,
            f"/dev/shm is {int(shm) // mem.MIB} MiB, below {min_shm} "
            "MiB (NCCL and vLLM's workers exchange data through it)",
            "df /dev/shm",
            "enlarge /dev/shm (tmpfs size=, docker --shm-size) or lower preflight_min_shm_mib(_cpu)",
        )
    ]


def clock_findings(host: str, hv: dict[str, Any], skew_max: float) -> list[Finding]:
    out: list[Finding] = []
    skew = hv.get("clock_skew_s")
    if skew_max and skew is not None and abs(float(skew)) > skew_max:
        out.append(
            _f(
                "strict",
                "clock-skew",
                host,
                f"the clock is {float(skew):+.1f} s off the controller's (more than {skew_max:g} s)",
                "date",
                "enable time sync (the base_os role installs it) and correct the clock",
            )
        )
    if hv.get("ntp_synchronized") is False:
        out.append(_f("warning", "ntp-off", host, "the clock is not NTP-synchronized", "timedatectl"))
    return out


def port_findings(host: str, hv: dict[str, Any]) -> list[Finding]:
    """A port r1deploy needs, held by a process that is not r1deploy's own service (a re-run)."""
    ports = hv.get("busy_ports")
    if ports is None and hv.get("ss_output") is not None:
        ports = busy_ports(parse_ss_listeners(hv["ss_output"]), hv.get("required_ports") or [])
    return [
        _f(
            "error",
            "port-busy",
            host,
            f"TCP port {port['port']} ({port.get('purpose', '')}) is "
            f"held by {port.get('process') or 'another process'}",
            port.get("variable", "port"),
            "stop that service or change the port variable",
        )
        for port in ports or []
    ]


def kernel_header_findings(host: str, hv: dict[str, Any]) -> list[Finding]:
    """A GPU host without a loaded driver builds it with DKMS: the running kernel's headers must exist."""
    g = hv.get("gpus") or {}
    if int(g.get("count") or 0) == 0 or (g.get("driver") or {}).get("version"):
        return []
    headers = hv.get("kernel_headers") or {}
    if headers.get("installed") or headers.get("available"):
        return []
    return [
        _f(
            "error",
            "kernel-headers",
            host,
            f"no kernel headers for the running kernel {hv.get('kernel')}: the DKMS driver build would fail",
            headers.get("package", "kernel headers"),
            "install the headers package, or boot a kernel whose headers the mirror has",
        )
    ]


# The model's download needs its checkpoint plus 5 % (index, tokenizer, partial files).
_MODEL_DISK_FACTOR = 1.05


def _disk_needs(hv: dict[str, Any], model: Any, settings: dict[str, Any]) -> dict[str, int]:
    """Bytes each path still needs on this GPU host: the model unless present, the venv unless present."""
    need: dict[str, int] = {}
    if model is not None and not hv.get("model_present"):
        # The preflight role passes both (preflight_model_root, preflight_venv: roles/r1deploy's values).
        root = str(settings["model_root"])
        need[root] = int(mem.checkpoint_bytes(model) * _MODEL_DISK_FACTOR)
    venv_gib = float(hv.get("venv_gib") or 0)
    if venv_gib and not hv.get("venv_present"):
        venv_path = str(settings["venv"])
        need[venv_path] = need.get(venv_path, 0) + int(venv_gib * mem.GIB)
    return need


def disk_findings(host: str, hv: dict[str, Any], need: dict[str, int]) -> list[Finding]:
    """What ``need`` asks for, summed per mount point, against the free space there."""
    mounts = hv.get("mounts") or []
    out: list[Finding] = []
    by_mount: dict[str, int] = {}
    for path, n in need.items():
        m = _mount_for(path, mounts)
        if m is not None and m.get("size_available") is not None:
            by_mount[str(m["mount"])] = by_mount.get(str(m["mount"]), 0) + n
        else:
            out.append(_f("warning", "disk-unknown", host, f"free space at {path} could not be measured"))
    for mp, n in sorted(by_mount.items()):
        free = int(next(m for m in mounts if str(m["mount"]) == mp).get("size_available") or 0)
        if free < n:
            out.append(
                _f(
                    "error",
                    "disk",
                    host,
                    f"{mp} has {free / mem.GIB:.1f} GiB free, the model and venv need {n / mem.GIB:.1f} GiB",
                    f"df {mp}",
                    "free space there or point model_root/vllm_runtime_venv elsewhere",
                )
            )
    return out


def venv_findings(per_host: dict[str, dict[str, str]]) -> list[Finding]:
    """After install the serving venvs must be identical (Ray refuses mixed Python/Ray). The rule's home
    is :func:`r1deploy.runtime.same_versions`, which the vllm_runtime role runs too."""
    return [
        _f(
            "error",
            "venv-differs",
            "gpu_nodes",
            problem,
            "ansible_local.r1deploy_runtime.versions",
            "re-run playbooks/serving.yml so every node gets the same locked venv",
        )
        for problem in runtime.same_versions(per_host)
    ]
