#!/usr/bin/env python3
"""Run the vLLM API server under a supervisor that knows what "serving" means.

``vllm.service`` starts this script (``Type=notify``); it starts the server as its child and:

* tells systemd the unit is ready (``READY=1``) only when the readiness probe passes: ``/health``,
  ``/v1/models`` and one real chat completion with non-degenerate text (``r1deploy.health``, run as
  the installed ``r1deploy-vllm-ready`` script), so ``systemctl start vllm`` returns when the model
  answers, not when the port opens;
* probes the same way every ``--interval`` seconds while serving. With vLLM's Ray executor the
  engine dies or hangs when a Ray node goes away while ``/health`` may still answer; a probe that
  fails while the server generated no token meanwhile (``vllm:generation_tokens_total`` in
  ``/metrics`` did not move, so a server that is only busy is left alone) counts as a failure, and
  after ``--failures`` of them in a row the supervisor stops the server and exits non-zero;
* exits with the server's status when the server exits.

systemd then starts the unit again (``Restart=always``); its ``ExecStartPre`` waits until the Ray
cluster has every node and GPU again, so vLLM comes back when the cluster is whole. Requests in
flight when the server is stopped fail (the connection closes); clients retry.

Stdlib only: the ``vllm_server`` role copies this file onto the head. The API key comes from the
environment (the unit's EnvironmentFile), never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

GENERATED_TOKENS = "vllm:generation_tokens_total"


def log(message: str) -> None:
    print(f"r1deploy-vllm-supervise: {message}", file=sys.stderr, flush=True)


def notify(message: str) -> None:
    """Send ``message`` to systemd's notification socket (nothing when not run by systemd)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def metric_sums(metrics_text: str, prefix: str = "vllm:") -> dict[str, float]:
    """Prometheus text exposition -> each metric's value summed over its label sets (e.g. vLLM's
    engines), for the metrics whose name starts with ``prefix``. `r1deploy status` reads it too."""
    sums: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith(prefix):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        sums[name] = sums.get(name, 0.0) + value
    return sums


def generated_tokens(metrics_text: str) -> float | None:
    """Sum of ``vllm:generation_tokens_total`` over its label sets (None when absent)."""
    return metric_sums(metrics_text).get(GENERATED_TOKENS)


def read_generated_tokens(base_url: str, key: str, timeout: float = 10) -> float | None:
    request = urllib.request.Request(base_url.rstrip("/") + "/metrics")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return generated_tokens(response.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class Verdict:
    """What one failed probe means."""

    failures: int
    restart: bool
    reason: str


def judge(failures: int, limit: int, probe_detail: str, before: float | None, after: float | None) -> Verdict:
    """Count a failed probe unless the server generated tokens meanwhile (busy, not dead)."""
    if before is not None and after is not None and after > before:
        return Verdict(failures, False, f"probe failed ({probe_detail}) but the server is generating: busy")
    failures += 1
    reason = f"probe failed {failures} of {limit} times in a row: {probe_detail}"
    return Verdict(failures, failures >= limit, reason)


@dataclass
class Probe:
    script: str
    url: str
    model: str
    timeout: float

    def run(self) -> tuple[bool, str]:
        """Run the readiness script once; (ok, detail)."""
        argv = [sys.executable, self.script, "--url", self.url, "--model", self.model]
        argv += ["--timeout", str(self.timeout)]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout * 2 + 30, check=False
            )
        except subprocess.TimeoutExpired:
            return False, f"the probe did not finish within {self.timeout * 2 + 30:.0f}s"
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return False, f"the probe printed no result (rc {proc.returncode}): {proc.stderr[-300:]}"
        if result.get("ok"):
            return True, "ready"
        return False, f"{result.get('stage', '?')}: {result.get('detail', '')}"


class Supervisor:
    def __init__(self, args: argparse.Namespace, child_argv: list[str]) -> None:
        self.args = args
        self.child_argv = child_argv
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.probe = Probe(args.probe, args.url, args.model, args.probe_timeout)
        self.key = os.environ.get("VLLM_API_KEY", "")

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def start_child(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.child = subprocess.Popen(self.child_argv, env=env)
        log(f"started the server, pid {self.child.pid}")

    def stop_child(self, grace: float = 30) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False as soon as the child exits or a stop is asked."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stopping or (self.child is not None and self.child.poll() is not None):
                return False
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        return not self.stopping and self.child is not None and self.child.poll() is None

    def child_status(self) -> int:
        assert self.child is not None
        code = self.child.wait()
        log(f"the server exited with status {code}")
        return code if code > 0 else 1

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            if not self.sleep(2):
                return False
            ok, detail = self.probe.run()
            if ok:
                return True
            notify(f"STATUS=starting: {detail[:200]}")
        log(f"not ready within {self.args.start_timeout:.0f}s")
        return False

    def serve(self) -> int:
        failures = 0
        while self.sleep(self.args.interval):
            before = read_generated_tokens(self.args.url, self.key)
            ok, detail = self.probe.run()
            if ok:
                if failures:
                    log("the probe passes again")
                    notify("STATUS=serving")
                failures = 0
                continue
            after = read_generated_tokens(self.args.url, self.key)
            verdict = judge(failures, self.args.failures, detail, before, after)
            failures = verdict.failures
            log(verdict.reason)
            notify(f"STATUS={verdict.reason[:200]}")
            if verdict.restart:
                log("stopping the server so that systemd starts it again")
                self.stop_child()
                return 1
        if self.stopping:
            self.stop_child()
            return 0
        return self.child_status()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.start_child()
        if not self.wait_ready():
            if self.stopping:
                self.stop_child()
                return 0
            if self.child is not None and self.child.poll() is not None:
                return self.child_status()
            self.stop_child()
            return 1
        log("serving: the readiness probe passed")
        notify("READY=1\nSTATUS=serving")
        return self.serve()


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: r1deploy-vllm-supervise [options] -- SERVER ARGV...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description="Run the vLLM server under a readiness supervisor.")
    parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://10.0.0.11:8000")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--probe", required=True, help="the readiness script (r1deploy-vllm-ready)")
    parser.add_argument("--interval", type=float, default=15, help="seconds between probes")
    parser.add_argument("--probe-timeout", type=float, default=60, help="seconds one probe may take")
    parser.add_argument("--failures", type=int, default=3, help="failed probes in a row before a restart")
    parser.add_argument("--start-timeout", type=float, default=900, help="seconds to become ready")
    args = parser.parse_args(argv[:split])
    child = argv[split + 1 :]
    if not child:
        raise SystemExit("no server command line after --")
    return args, child


def main(argv: list[str] | None = None) -> int:
    args, child = parse_args(list(sys.argv[1:] if argv is None else argv))
    return Supervisor(args, child).run()


if __name__ == "__main__":
    sys.exit(main())
