"""Monitoring on the deployed lab: Prometheus scrapes every target, every alert rule and dashboard panel
has data from the deployed versions, and an alert fires and clears with vLLM.

Prometheus listens on the monitoring host's loopback only, so the tests ask it through `docker exec`
(the lab's own host). The lab shortens scrape and alert intervals (inventory_vars/monitoring.yml).
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.lab.helpers import REPO, on_host

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

DASHBOARD = REPO / "roles" / "prometheus" / "files" / "grafana" / "r1deploy-serving.json"
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})?(\s*\()?')


def metric_selectors(expr: str) -> list[str]:
    """The instant-vector selectors of a PromQL expression (`name` or `name{matchers}`), in order."""
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors: keep the vector
    found: list[str] = []
    for match in SELECTOR.finditer(text):
        name, matchers, call = match.groups()
        if call or name.lower() in PROMQL_WORDS:
            continue  # a function, or an operator keyword
        found.append(name + (matchers or ""))
    return found


def test_metric_selectors_reads_promql_like_prometheus() -> None:
    """The helper the data tests rely on, on expressions of the shapes the rules and panels use."""
    assert metric_selectors('up{job="vllm"} == 0') == ['up{job="vllm"}']
    assert metric_selectors(
        "histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))"
    ) == ["vllm:time_to_first_token_seconds_bucket"]
    assert metric_selectors(
        "r1deploy_gpu_collector_success == 0 or (time() - r1deploy_gpu_collector_timestamp_seconds) > 300"
    ) == ["r1deploy_gpu_collector_success", "r1deploy_gpu_collector_timestamp_seconds"]
    assert metric_selectors('a{m=~"/|/srv"} / b{m=~"/|/srv"} < 0.1') == ['a{m=~"/|/srv"}', 'b{m=~"/|/srv"}']


@pytest.fixture(scope="module")
def prometheus(deployed_lab, lab_exec) -> Callable[[str, dict[str, str] | None], dict]:
    """GET a Prometheus (or Alertmanager, with port 9093) API path on the monitoring host."""
    host = next(iter(deployed_lab.groups["frontend"]))

    def get(path: str, params: dict[str, str] | None = None, port: int = 9090) -> dict:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        out = lab_exec(host, "curl", "-sf", "--max-time", "20", f"http://127.0.0.1:{port}{path}{query}")
        return json.loads(out.stdout)

    return get


def query(prometheus, expr: str) -> list[dict]:
    answer = prometheus("/api/v1/query", {"query": expr})
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 2.0) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def chat(deployed_lab, text: str = "Say hello.") -> None:
    reply = httpx.post(
        f"{deployed_lab.vllm_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {deployed_lab.api_key}"},
        json={
            "model": httpx.get(
                f"{deployed_lab.vllm_url}/v1/models",
                headers={"Authorization": f"Bearer {deployed_lab.api_key}"},
                timeout=30,
            ).json()["data"][0]["id"],
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 24,
            "temperature": 0,
            "stream": True,
        },
        timeout=120,
    )
    assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def after_chats(deployed_lab, prometheus) -> None:
    """Two chats, then wait until Prometheus has scraped the counters they moved."""
    for _ in range(2):
        chat(deployed_lab)
    wait_for(
        "vllm:generation_tokens_total > 0 in Prometheus",
        lambda: query(prometheus, "sum(vllm:generation_tokens_total) > 0"),
        timeout=90,
    )
    chat(deployed_lab)  # one more inside the rate windows, after the first scrape of the counters
    time.sleep(12)  # two scrape intervals of the lab (5 s)


def test_every_scrape_target_is_up(deployed_lab, prometheus) -> None:
    def down() -> list[str]:
        targets = prometheus("/api/v1/targets")["data"]["activeTargets"]
        return [
            f"{t['labels']['job']}/{t['labels']['instance']}: {t['lastError']}"
            for t in targets
            if t["health"] != "up"
        ]

    wait_for("every target up", lambda: not down() or None, timeout=120)
    jobs = {t["labels"]["job"] for t in prometheus("/api/v1/targets")["data"]["activeTargets"]}
    assert jobs == {"prometheus", "alertmanager", "node", "vllm", "ray"}
    nodes = query(prometheus, 'up{job="node"} == 1')
    expected = set(deployed_lab.groups["gpu_nodes"]) | set(deployed_lab.groups["frontend"])
    assert {r["metric"]["instance"] for r in nodes} == expected


def test_vllm_metrics_follow_a_chat(deployed_lab, prometheus, after_chats) -> None:
    del after_chats
    head = next(iter(deployed_lab.groups["ray_head"]))
    for name in (
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
    ):
        result = query(prometheus, f'{name}{{instance="{head}"}}')
        assert result, f"{name} missing from Prometheus (vLLM renamed it?)"


def test_every_alert_rule_reads_metrics_that_exist(prometheus, after_chats) -> None:
    """A renamed metric fails here instead of leaving an alert that can never fire."""
    del after_chats
    groups = prometheus("/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups if group["name"].startswith("r1deploy") for rule in group["rules"]]
    assert len(rules) >= 11
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    empty = [
        f"{rule['name']}: {sel}"
        for rule in rules
        for sel in metric_selectors(rule["query"])
        if not query(prometheus, sel)
    ]
    assert not empty, f"selectors without data: {empty}"


def test_every_dashboard_panel_has_data(prometheus, after_chats) -> None:
    del after_chats
    panels = json.loads(Path(DASHBOARD).read_text())["panels"]
    exprs = [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]
    assert len(exprs) >= 10
    empty = [f"{title}: {expr}" for title, expr in exprs if not query(prometheus, expr)]
    assert not empty, f"panels without data: {empty}"


def test_gpu_metrics_come_from_the_collector(deployed_lab, prometheus) -> None:
    """In the lab a named stub replays a recorded V100 query; the collector and exporter are real."""
    for host in deployed_lab.groups["gpu_nodes"]:
        count = query(prometheus, f'r1deploy_gpu_count{{instance="{host}"}}')
        assert count and float(count[0]["value"][1]) == 4, (host, count)
        ok = query(prometheus, f'r1deploy_gpu_collector_success{{instance="{host}"}} == 1')
        assert ok, f"{host}: the GPU collector did not succeed"
    frontend = next(iter(deployed_lab.groups["frontend"]))
    assert not query(prometheus, f'r1deploy_gpu_count{{instance="{frontend}"}}'), (
        "no GPU collector off GPU hosts"
    )


def test_scrape_ports_do_not_answer_outside_the_cluster_network(deployed_lab, lab_exec) -> None:
    """Node exporter binds the cluster address; Prometheus and Alertmanager bind loopback."""
    frontend = next(iter(deployed_lab.groups["frontend"]))
    listening = lab_exec(frontend, "ss", "-ltnH").stdout
    ports = {line.split()[3] for line in listening.splitlines()}
    assert "127.0.0.1:9090" in ports and "127.0.0.1:9093" in ports, ports
    assert not {p for p in ports if p.endswith((":9090", ":9093", ":9094")) and not p.startswith("127.0.0.1")}
    node_ip = deployed_lab.groups["frontend"][frontend]
    assert f"{node_ip}:9100" in ports, ports


def _alert_state(prometheus, name: str) -> str:
    alerts = prometheus("/api/v1/alerts")["data"]["alerts"]
    states = {a["state"] for a in alerts if a["labels"]["alertname"] == name}
    return "firing" if "firing" in states else ("pending" if "pending" in states else "inactive")


@pytest.mark.destructive(order=30)
def test_vllm_down_alert_fires_reaches_alertmanager_and_clears(deployed_lab, prometheus, lab_exec) -> None:
    head = next(iter(deployed_lab.groups["ray_head"]))
    assert _alert_state(prometheus, "VLLMDown") == "inactive"
    started = time.monotonic()
    lab_exec(head, "systemctl", "stop", "vllm")
    try:
        wait_for("VLLMDown firing", lambda: _alert_state(prometheus, "VLLMDown") == "firing", timeout=120)
        fired = time.monotonic() - started
        in_alertmanager = wait_for(
            "VLLMDown in Alertmanager",
            lambda: [
                a for a in prometheus("/api/v2/alerts", port=9093) if a["labels"]["alertname"] == "VLLMDown"
            ],
            timeout=60,
        )
        assert in_alertmanager[0]["labels"]["instance"] == head
        assert in_alertmanager[0]["annotations"]["runbook"] == "docs/runbooks/alerts.md#vllmdown"
    finally:
        lab_exec(head, "systemctl", "start", "vllm")
    restarted = time.monotonic()
    wait_for(
        "VLLMDown cleared",
        lambda: _alert_state(prometheus, "VLLMDown") == "inactive",
        timeout=600,
        interval=5,
    )
    deployed_lab.record("monitoring_vllm_down_alert_fired_seconds", round(fired, 1))
    deployed_lab.record("monitoring_vllm_down_alert_cleared_seconds", round(time.monotonic() - restarted, 1))
    chat(deployed_lab)  # serving again


def test_prometheus_ui_through_nginx_asks_for_its_password(lab, deployed_lab, tmp_path: Path) -> None:
    """https://<frontend>/prometheus/: 401 without or with a wrong password, Prometheus with the
    generated one; the host keeps only a salted hash of it."""
    host = next(iter(deployed_lab.groups["frontend"]))
    public_ip = next(h for h in lab.hosts if h.name == host).public_ip
    cafile = tmp_path / "frontend.pem"
    cafile.write_text(on_host(deployed_lab.inventory, host, "cat /etc/nginx/r1deploy/tls/selfsigned.crt"))
    password = (deployed_lab.inventory / "credentials" / "prometheus_web_password").read_text().strip()
    up = {"query": "up"}
    with httpx.Client(
        base_url=f"https://{public_ip}", verify=ssl.create_default_context(cafile=str(cafile)), timeout=30
    ) as web:
        assert web.get("/prometheus/api/v1/query", params=up).status_code == 401
        assert web.get("/prometheus/api/v1/query", params=up, auth=("prometheus", "wrong")).status_code == 401
        assert web.get("/prometheus/api/v1/query", params=up, auth=("admin", password)).status_code == 401
        answer = web.get("/prometheus/api/v1/query", params=up, auth=("prometheus", password))
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["status"] == "success" and answer.json()["data"]["result"]
        # The UI, following its redirects: every hop stays under the prefix (nginx rewrites the ones
        # Prometheus makes for its route prefix /), and the page is Prometheus's.
        page = web.get("/prometheus/graph", auth=("prometheus", password), follow_redirects=True)
        # (nginx makes the Location headers absolute: compare their paths.)
        paths = [urllib.parse.urlsplit(hop.headers["location"]).path for hop in page.history]
        assert all(path.startswith("/prometheus/") for path in paths), [
            hop.headers["location"] for hop in page.history
        ]
        assert page.url.path.startswith("/prometheus/") and page.status_code == 200, page.url
        assert "Prometheus" in page.text, page.text[:300]
        # Its links carry the prefix nginx serves it under (--web.external-url).
        redirect = web.get("/prometheus/", auth=("prometheus", password))
        location = urllib.parse.urlsplit(redirect.headers["location"]).path
        assert redirect.status_code == 302 and location.startswith("/prometheus/"), (
            redirect.status_code,
            redirect.headers,
        )
    htpasswd = "/etc/nginx/r1deploy/prometheus.htpasswd"
    mode = on_host(deployed_lab.inventory, host, f"stat -c '%a %U %G' {htpasswd}")
    assert mode.strip() == "640 root www-data"
    line = on_host(deployed_lab.inventory, host, f"cat {htpasswd}")
    assert line.startswith("prometheus:{SSHA}") and password not in line


@pytest.mark.destructive(order=25)
def test_monitoring_services_come_back_after_their_main_process_is_killed(deployed_lab, lab_exec) -> None:
    frontend = next(iter(deployed_lab.groups["frontend"]))
    head = next(iter(deployed_lab.groups["ray_head"]))
    for host, unit in (
        (frontend, "prometheus"),
        (frontend, "prometheus-alertmanager"),
        (frontend, "prometheus-node-exporter"),
        (head, "prometheus-node-exporter"),
    ):
        before = lab_exec(host, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
        assert before not in ("", "0"), f"{host}: {unit} is not running"
        lab_exec(host, "kill", "-9", before)

        def back(host: str = host, unit: str = unit, before: str = before) -> bool:
            pid = lab_exec(host, "systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
            active = lab_exec(host, "systemctl", "is-active", unit, check=False).stdout.strip()
            return active == "active" and pid not in ("", "0", before)

        wait_for(f"{host}: {unit} back after SIGKILL", back, timeout=60)
