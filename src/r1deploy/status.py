"""``r1deploy status``: what is running where, gathered by playbooks/status.yml through the runner.

Also the one place for the names the CLI needs to know about the deployed stack (groups, units,
facts, credential files), and ``endpoints()`` which resolves the vLLM URL, served model and chat page
URL from an inventory with Ansible itself (role defaults included), for ``smoke`` and ``bench``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from r1deploy.events import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from r1deploy.runner import RunRequest, RunResult, execute, resolve_playbook
from r1deploy.supervise import metric_sums


class Stack:
    """Names shared with the roles (docs/architecture.md). Change them here only."""

    GROUP_HEAD = "ray_head"
    GROUP_WORKERS = "ray_workers"
    GROUP_GPU = "gpu_nodes"
    GROUP_FRONTEND = "frontend"
    UNIT_RAY_HEAD = "ray-head.service"
    UNIT_RAY_WORKER = "ray-worker.service"
    UNIT_VLLM = "vllm.service"
    UNIT_WEBUI = "open-webui.service"
    UNIT_NGINX = "nginx.service"
    UNITS_BY_GROUP: ClassVar[dict[str, tuple[str, ...]]] = {
        GROUP_HEAD: (UNIT_RAY_HEAD, UNIT_VLLM),
        GROUP_WORKERS: (UNIT_RAY_WORKER,),
        GROUP_FRONTEND: (UNIT_WEBUI, UNIT_NGINX),
    }
    API_KEY_FILE = "vllm_api_key"  # under the credentials dir (default <inventory_dir>/credentials)
    WEBUI_ADMIN_PASSWORD_FILE = "open_webui_admin_password"
    PROMETHEUS_PASSWORD_FILE = "prometheus_web_password"  # the nginx /prometheus/ route's (user prometheus)
    STATUS_PLAYBOOK = "status.yml"
    FACT_ENDPOINTS = "r1deploy_status_endpoints"
    FACT_HOST = "r1deploy_status_host"
    FACT_CLUSTER = "r1deploy_status_cluster"
    FACT_FRONTEND = "r1deploy_status_frontend"
    FACT_CERT = "r1deploy_status_cert"
    FACT_RATE = "r1deploy_status_rate"


@dataclass
class Endpoints:
    head: str
    vllm_url: str  # http://NODE_IP:PORT/v1
    model: str
    credentials_dir: Path
    public_url: str | None
    frontends: list[str]
    nginx_vllm_route: bool = False
    webui_admin_email: str = ""
    tls_cert_pem: str = ""
    prometheus_url: str | None = None  # https://<monitoring frontend>/prometheus/ (basic authentication)

    @property
    def api_key_file(self) -> Path:
        return self.credentials_dir / Stack.API_KEY_FILE

    def as_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "vllm_url": self.vllm_url,
            "model": self.model,
            "public_url": self.public_url,
            "frontends": self.frontends,
            "credentials_dir": str(self.credentials_dir),
            "nginx_vllm_route": self.nginx_vllm_route,
            "prometheus_url": self.prometheus_url,
            "tls_cert_fetched": bool(self.tls_cert_pem),
        }


class StatusError(Exception):
    pass


def _facts(result: RunResult, events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """host -> value of fact ``name`` as set by set_fact in the recorded events."""
    out: dict[str, Any] = {}
    for event in events:
        if event.get("event") != "runner_on_ok":
            continue
        data = event.get("event_data") or {}
        facts = (data.get("res") or {}).get("ansible_facts") or {}
        if name in facts:
            out[str(data.get("host"))] = facts[name]
    return out


def _run_status(
    inventory: Path, tags: str | None, argv: list[str], view: Any = None
) -> tuple[RunResult, list[dict]]:
    events: list[dict[str, Any]] = []
    request = RunRequest(
        command="status",
        playbooks=[resolve_playbook(Stack.STATUS_PLAYBOOK)],
        inventory=inventory,
        tags=tags,
        argv=argv,
        record=tags is None,
    )
    result = execute(request, view, on_event=events.append)
    return result, events


def endpoints(inventory: Path, fetch_cert: bool = False) -> Endpoints:
    """Resolve the stack's endpoints with Ansible (variables only, no SSH, ~1.5 s).

    ``fetch_cert`` also reads the certificate nginx serves from the frontend (over SSH), so a client
    can verify TLS against exactly that certificate.
    """
    tags = "endpoints,cert" if fetch_cert else "endpoints"
    result, events = _run_status(inventory, tags, ["status", "--tags", tags, "-i", str(inventory)])
    return endpoints_from(inventory, result, events)


def endpoints_from(inventory: Path, result: RunResult, events: list[dict[str, Any]]) -> Endpoints:
    """The endpoints from a status.yml run's events (``endpoints`` tag); StatusError when missing."""
    found = _facts(result, events, Stack.FACT_ENDPOINTS)
    if not found:
        errors = "; ".join(
            result.summary.get("errors", []) + [f["message"] for f in result.summary["failures"]]
        )
        raise StatusError(
            f"cannot resolve the stack's endpoints from {inventory}: {errors or 'no ray_head host'}"
        )
    heads = [(h, v) for h, v in found.items() if _truthy(v.get("head"))]
    if not heads:
        raise StatusError(f"{inventory}: no host in group {Stack.GROUP_HEAD}")
    head, ep = heads[0]
    frontends = [h for h, v in found.items() if _truthy(v.get("frontend"))]
    public = next((str(found[h].get("public_url", "")).strip() for h in frontends), None)
    certs = _facts(result, events, Stack.FACT_CERT)
    frontend_ep = found[frontends[0]] if frontends else {}
    prometheus = next(
        (
            str(found[h].get("public_url", "")).strip().rstrip("/") + "/prometheus/"
            for h in frontends
            if _truthy(found[h].get("prometheus_route")) and str(found[h].get("public_url", "")).strip()
        ),
        None,
    )
    return Endpoints(
        head=head,
        vllm_url=f"http://{ep['vllm_host']}:{int(ep['vllm_port'])}/v1",
        model=str(ep["served_model_name"]),
        credentials_dir=Path(str(ep["credentials_dir"])),
        public_url=public or None,
        frontends=frontends,
        nginx_vllm_route=_truthy(frontend_ep.get("nginx_vllm_route")),
        webui_admin_email=str(frontend_ep.get("webui_admin_email", "")),
        tls_cert_pem=next((str(certs[h]) for h in frontends if certs.get(h)), ""),
        prometheus_url=prometheus,
    )


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


# ---- parsing what the status playbook gathered --------------------------------------------------------


def parse_gpus(text: str, fields: str = "current") -> list[dict[str, Any]]:
    """nvidia-smi's CSV as the status playbook queries it, parsed by the GPU fact's own parser."""
    from r1deploy.gpufacts import QUERY_FIELDS, QUERY_FIELDS_OLD, FactError, parse_nvidia_smi

    try:
        devices = parse_nvidia_smi(text, QUERY_FIELDS_OLD if fields == "old" else QUERY_FIELDS)
    except FactError:
        return []
    return [
        {
            "index": d["index"],
            "name": d["name"],
            "compute_capability": d["compute_capability"],
            "memory_mib": d["memory_mib"],
            "driver": d["_driver_version"],
            "persistence_mode": d["persistence_mode"],
        }
        for d in devices
    ]


def parse_units(text: str) -> dict[str, dict[str, Any]]:
    """``systemctl show --property=...`` output for several units (blank-line separated blocks)."""
    units: dict[str, dict[str, Any]] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        unit = props.get("Id")
        if not unit:
            continue
        units[unit] = {
            "active": props.get("ActiveState") == "active",
            "state": f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')}",
            "enabled": props.get("UnitFileState", ""),
            "loaded": props.get("LoadState") == "loaded",
            "since": props.get("ActiveEnterTimestamp") or None,
            "restarts": int(props["NRestarts"]) if props.get("NRestarts", "").isdigit() else None,
        }
    return units


_RAY_RESOURCE = re.compile(r"^\s*([\d.]+)\s*/\s*([\d.]+)\s+(CPU|GPU)\b", re.MULTILINE)


def parse_ray_status(text: str) -> dict[str, Any]:
    """Alive (active + idle) and pending nodes, CPU/GPU usage from ``ray status`` text.

    Ray lists alive nodes under "Active:" and, with the v2 autoscaler's formatter, idle ones under
    "Idle:", one ``<count> <node type or id>`` line each; resources as ``used/total NAME`` lines.
    """
    section = ""
    alive = 0
    pending = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith(":") and not stripped.startswith("("):
            section = stripped
            continue
        if not stripped or stripped.startswith(("(", "-", "=")):
            continue
        if section in ("Active:", "Idle:"):
            match = re.match(r"^(\d+)\s+\S+", stripped)
            alive += int(match.group(1)) if match else 1
        elif section == "Pending:":
            pending += 1
    resources: dict[str, dict[str, float]] = {}
    for used, total, kind in _RAY_RESOURCE.findall(text):
        resources.setdefault(kind, {"used": float(used), "total": float(total)})
    return {
        "nodes_active": alive,
        "nodes_pending": pending,
        "gpus_total": resources.get("GPU", {}).get("total", 0.0),
        "gpus_used": resources.get("GPU", {}).get("used", 0.0),
        "cpus_total": resources.get("CPU", {}).get("total", 0.0),
    }


def parse_serving(metric_lines: list[str], rate: dict[str, Any] | None) -> dict[str, Any]:
    """The serving numbers from vLLM's /metrics (summed over its engines) and Prometheus's rate.

    ``tokens_per_s_1m`` is None where no Prometheus answered (monitoring.yml not deployed)."""
    sums = metric_sums("\n".join(str(line) for line in metric_lines))
    tokens_per_s = None
    if rate and str(rate.get("status")) == "200":
        result = rate.get("result") or []
        try:
            tokens_per_s = round(float(result[0]["value"][1]), 2) if result else 0.0
        except (KeyError, IndexError, TypeError, ValueError):
            tokens_per_s = None
    usage = sums.get("vllm:kv_cache_usage_perc")
    return {
        "metrics": bool(sums),
        "running": int(sums["vllm:num_requests_running"]) if "vllm:num_requests_running" in sums else None,
        "waiting": int(sums["vllm:num_requests_waiting"]) if "vllm:num_requests_waiting" in sums else None,
        # vLLM reports a fraction (0-1) under a name that says percent.
        "kv_cache_usage_pct": round(usage * 100, 1) if usage is not None else None,
        "generation_tokens_total": int(sums.get("vllm:generation_tokens_total", 0)) if sums else None,
        "tokens_per_s_1m": tokens_per_s,
    }


def build_status(result: RunResult, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The status document (``--json``) from the status playbook's facts and the run's stats."""
    endpoints_by_host = _facts(result, events, Stack.FACT_ENDPOINTS)
    host_facts = _facts(result, events, Stack.FACT_HOST)
    cluster_facts = _facts(result, events, Stack.FACT_CLUSTER)
    frontend_facts = _facts(result, events, Stack.FACT_FRONTEND)
    rate_facts = _facts(result, events, Stack.FACT_RATE)
    unreachable = sorted(h for h, c in result.summary.get("hosts", {}).items() if c.get("unreachable"))
    problems: list[str] = [f"{h}: unreachable" for h in unreachable]

    hosts: dict[str, Any] = {}
    for name in sorted(set(result.summary.get("hosts", {})) | set(host_facts)):
        facts = host_facts.get(name)
        if facts is None:
            hosts[name] = {"reachable": name not in unreachable, "gathered": False}
            continue
        gpus = (
            parse_gpus(str(facts.get("nvidia_smi", "")), str(facts.get("nvidia_smi_fields", "current")))
            if str(facts.get("nvidia_smi_rc")) == "0"
            else []
        )
        fact = facts.get("gpu_fact") or {}
        driver = gpus[0]["driver"] if gpus else ((fact.get("driver") or {}).get("version") or "")
        units = parse_units(str(facts.get("units", "")))
        for unit, info in units.items():
            if not info["loaded"]:
                problems.append(f"{name}: {unit} is not installed")
            elif not info["active"]:
                problems.append(f"{name}: {unit} is {info['state']}")
        hosts[name] = {
            "reachable": True,
            "gathered": True,
            "gpus": gpus,
            "gpu_count": len(gpus) if gpus else int(fact.get("count", 0) or 0),
            "gpu_source": "nvidia-smi" if gpus else (fact.get("source") or "none"),
            "driver": driver,
            "units": units,
        }

    cluster: dict[str, Any] = {}
    if cluster_facts:
        head, facts = next(iter(cluster_facts.items()))
        ray_ok = str(facts.get("ray_rc")) == "0"
        ray = parse_ray_status(str(facts.get("ray_status", ""))) if ray_ok else {}
        expected_nodes = sum(1 for h in host_facts if h in _group_hosts(endpoints_by_host, hosts, "gpu"))
        ray.update({"ok": ray_ok, "error": "" if ray_ok else str(facts.get("ray_stderr", ""))})
        if not ray_ok:
            problems.append(f"ray: `ray status` failed on {head}: {ray['error'][-200:]}")
        elif expected_nodes and ray.get("nodes_active", 0) < expected_nodes:
            problems.append(f"ray: {ray.get('nodes_active')} of {expected_nodes} nodes active")
        endpoint = endpoints_by_host.get(head, {})
        served = str(endpoint.get("served_model_name", ""))
        models = [str(m) for m in facts.get("models") or []]
        healthy = str(facts.get("health_status")) == "200"
        vllm = {
            "url": facts.get("vllm_url"),
            "healthy": healthy,
            "health_error": "" if healthy else str(facts.get("health_msg", "")),
            "models": models,
            "served_model": served,
            "model_served": served in models,
            "max_model_len": _int_or_none(facts.get("max_model_len")),
            "serving": parse_serving(list(facts.get("metrics") or []), next(iter(rate_facts.values()), None)),
        }
        if not healthy:
            problems.append(f"vllm: {facts.get('health_url')}: {vllm['health_error'] or 'not healthy'}")
        elif not vllm["model_served"]:
            problems.append(f"vllm: model {served!r} not served (server lists {models})")
        cluster = {"head": head, "ray": ray, "vllm": vllm}
    frontend: dict[str, Any] = {}
    for host, facts in frontend_facts.items():
        ok = str(facts.get("status")) == "200"
        frontend[host] = {
            "url": str(facts.get("url", "")),
            "ok": ok,
            "error": "" if ok else facts.get("msg", ""),
        }
        if not ok:
            problems.append(f"{host}: chat page {facts.get('url')} not answering: {facts.get('msg', '')}")
    chat_url = next((f["url"] for f in frontend.values()), None) or next(
        (
            str(v.get("public_url", "")).strip()
            for v in endpoints_by_host.values()
            if _truthy(v.get("frontend"))
        ),
        None,
    )
    if result.exit_code not in (EXIT_OK, EXIT_UNREACHABLE):
        problems.extend(
            f"{f['host']}: {f['task']}: {f['message']}" for f in result.summary.get("failures", [])
        )
        problems.extend(result.summary.get("errors", []))
    if unreachable:
        code = EXIT_UNREACHABLE
    elif result.exit_code not in (EXIT_OK,):
        code = result.exit_code
    else:
        code = EXIT_OK if not problems else EXIT_FAILED
    return {
        "schema": "r1deploy.status/1",
        "ok": code == EXIT_OK,
        "exit_code": code,
        "problems": problems,
        "hosts": hosts,
        "cluster": cluster,
        "frontend": frontend,
        "chat_url": chat_url,
        "run_id": result.summary.get("run_id"),
    }


def _group_hosts(endpoints_by_host: dict[str, Any], hosts: dict[str, Any], kind: str) -> set[str]:
    """GPU nodes are the hosts running a Ray unit."""
    return {
        name
        for name, info in hosts.items()
        if any(u in (info.get("units") or {}) for u in (Stack.UNIT_RAY_HEAD, Stack.UNIT_RAY_WORKER))
    }


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def gather(inventory: Path, argv: list[str], view: Any = None) -> dict[str, Any]:
    result, events = _run_status(inventory, None, argv, view)
    doc = build_status(result, events)
    from r1deploy import pointers  # imports this module

    try:
        doc["pointers"] = pointers.build(inventory, endpoints_from(inventory, result, events)).as_dict()
    except StatusError:
        doc["pointers"] = None
    return doc
