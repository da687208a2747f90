#!/usr/bin/env python3
"""Run r1deploy's rendered units without systemd, prove the serving path, stop them by PID.

Driven by scripts/gpu_proof.sh (docs/gpu-proof.md). Standard library only.

A *rendered folder* is what playbooks/render_units.yml writes: ``manifest.json`` and one folder per
host holding ``etc/systemd/system/*.service``, ``etc/r1deploy/*.env`` and ``opt/r1deploy/bin/*``.
Paths in the units (EnvironmentFile=, ExecStart* arguments) are taken from the host's folder when the
file is there, else from the machine, so the same code reads a live host with ``--root /``.

Commands:
  lint  RENDERED                 parse every unit, print the command lines, flag defects
  up    RENDERED --state DIR     start head Ray, worker Ray, then vLLM (ExecStartPre first), as
                                 background process sessions; PIDs in DIR
  check RENDERED --state DIR     readiness probe, /v1/models, streamed chat (reasoning split),
                                 ray status, placement groups/actors, NCCL lines, r1deploy bench
  down  RENDERED --state DIR     stop what `up` started, by PID (process session), newest first
  run   RENDERED --state DIR     up, check, down (down also on failure)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import units as U  # noqa: E402

# Never inherited by a unit from the caller: systemd starts units with a clean environment, and these
# would change which Python packages or Ray cluster a unit sees.
DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX", "RAY_ADDRESS")
SECRET_KEYS = re.compile(r"KEY|TOKEN|PASSWORD|SECRET", re.I)


def log(msg: str) -> None:
    print(f"[gpu-proof {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Host:
    def __init__(self, name: str, root: Path, info: dict[str, Any]):
        self.name, self.root, self.info = name, root, info

    def path(self, p: str) -> str:
        """A unit's absolute path: from the rendered folder when the file is there."""
        if p.startswith("/") and str(self.root) != "/":
            local = self.root / p.lstrip("/")
            if local.exists():
                return str(local)
        return p

    def unit(self, name: str) -> U.Unit | None:
        f = self.root / "etc/systemd/system" / name
        return U.read_unit(f) if f.is_file() else None


class Deployment:
    def __init__(self, rendered: Path):
        self.dir = rendered.resolve()
        mf = self.dir / "manifest.json"
        if not mf.is_file():
            raise SystemExit(f"{mf}: no manifest (render with playbooks/render_units.yml)")
        self.manifest = json.loads(mf.read_text())
        self.hosts = {h: Host(h, self.dir / h, i) for h, i in self.manifest["hosts"].items()}
        self.head = self.hosts[self.manifest["head"]]
        self.workers = [self.hosts[w] for w in self.manifest.get("workers", [])]
        self.vllm = self.manifest["vllm"]

    def ray_units(self) -> list[tuple]:
        out = [(self.head, "ray-head.service")]
        out += [(w, "ray-worker.service") for w in self.workers]
        return out


# ------------------------------------------------------------------------------------------------
# environment and commands


def unit_env(host: Host, unit: U.Unit, state: Path, generate_secrets: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    for value in U.service(unit, "EnvironmentFile"):
        optional = value.startswith("-")
        path = host.path(value.lstrip("-"))
        if not Path(path).is_file():
            if path.endswith("secrets.env") and generate_secrets:
                path = str(ensure_secrets(state, Path(path).name))
            elif optional:
                continue
            else:
                raise SystemExit(f"{host.name}: EnvironmentFile {path} is missing")
        env.update(U.parse_env_file(Path(path).read_text()))
    env.update(U.env_assignments(U.service(unit, "Environment")))
    return env


def ensure_secrets(state: Path, name: str) -> Path:
    f = state / name
    if not f.is_file():
        f.write_text(f"VLLM_API_KEY={secrets.token_urlsafe(30)}\n")
        f.chmod(0o600)
    return f


def command(host: Host, value: str) -> tuple:
    try:
        prefixes, argv = U.split_command(value)
    except U.CommandError as exc:
        raise SystemExit(f"{host.name}: a command line systemd would refuse: {exc}") from exc
    return prefixes, [host.path(a) if a.startswith("/") else a for a in argv]


def write_env_record(path: Path, env: dict[str, str]) -> None:
    keys = sorted(k for k in env if k not in os.environ or os.environ.get(k) != env[k])
    path.write_text("".join(f"{k}={'<hidden>' if SECRET_KEYS.search(k) else env[k]}\n" for k in keys))


def start_unit(host: Host, name: str, state: Path, generate_secrets: bool) -> int:
    unit = host.unit(name)
    if unit is None:
        raise SystemExit(f"{host.name}: {name} was not rendered")
    tag = f"{host.name}.{name.replace('.service', '')}"
    env = unit_env(host, unit, state, generate_secrets)
    write_env_record(state / f"{tag}.env", env)
    cwd = (U.service(unit, "WorkingDirectory") or ["/"])[0].lstrip("-")
    Path(cwd).mkdir(parents=True, exist_ok=True)
    logf = open(state / f"{tag}.log", "ab")  # noqa: SIM115 - the unit's process keeps writing to it
    user = (U.service(unit, "User") or ["root"])[0]
    if user != "root" and os.geteuid() == 0:
        log(f"{tag}: the unit runs as {user}; without systemd it runs as root here")
    timeout = float((U.service(unit, "TimeoutStartSec") or ["900"])[0])
    for pre in U.service(unit, "ExecStartPre"):
        prefixes, argv = command(host, pre)
        log(f"{tag}: ExecStartPre {' '.join(argv)}")
        t = time.monotonic()
        rc = subprocess.call(argv, env=env, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout)
        log(f"{tag}: ExecStartPre rc={rc} in {time.monotonic() - t:.1f}s")
        if rc and "-" not in prefixes:
            raise SystemExit(f"{tag}: ExecStartPre failed (rc {rc}); see {state / (tag + '.log')}")
    starts = U.service(unit, "ExecStart")
    if len(starts) != 1:
        raise SystemExit(f"{tag}: expected one ExecStart, found {len(starts)}")
    _, argv = command(host, starts[0])
    problems = U.lint_command(argv)
    if problems:
        raise SystemExit(f"{tag}: ExecStart is malformed: {'; '.join(problems)}")
    (state / f"{tag}.argv.json").write_text(json.dumps(argv, indent=1))
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    with open(state / "pids", "a") as f:
        f.write(f"{proc.pid} {tag} {time.time():.3f}\n")
    log(f"{tag}: started pid {proc.pid}: {' '.join(argv[:3])} ...")
    return proc.pid


def wait_port(host: str, port: int, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


# ------------------------------------------------------------------------------------------------
# up / down


def cmd_up(d: Deployment, state: Path, generate_secrets: bool) -> dict[str, Any]:
    state.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {"t0": time.time()}
    for host, name in d.ray_units():
        start_unit(host, name, state, generate_secrets)
        if host is d.head:
            ip, port = d.head.info["ray"]["address"].rsplit(":", 1)
            if not wait_port(ip, int(port), 120):
                raise SystemExit(f"the Ray head did not open {ip}:{port} in 120s")
            times["ray_head_listening_s"] = round(time.time() - times["t0"], 1)
    # vllm.service: its ExecStartPre waits for every node and GPU of the plan (r1deploy-ray-wait).
    start_unit(d.head, "vllm.service", state, generate_secrets)
    times["vllm_exec_s"] = round(time.time() - times["t0"], 1)
    (state / "times.json").write_text(json.dumps(times))
    return times


def proc_table() -> dict[int, tuple]:
    """pid -> (ppid, sid, cmdline)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            out[int(p.name)] = (int(fields[1]), int(fields[3]), cmd)
        except (OSError, ValueError, IndexError):
            continue
    return out


def family(root: int, table: dict[int, tuple]) -> list[int]:
    """The process, its descendants, and everything still in its session (re-parented children)."""
    members = {root} if root in table else set()
    changed = True
    while changed:
        changed = False
        for pid, (ppid, sid, _) in table.items():
            if pid not in members and (ppid in members or sid == root):
                members.add(pid)
                changed = True
    return sorted(members)


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone; our own zombie children are reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def cmd_down(state: Path, grace: float = 30.0) -> list[str]:
    pidfile = state / "pids"
    if not pidfile.is_file():
        return []
    entries = [line.split() for line in pidfile.read_text().splitlines() if line.strip()]
    report = []
    for pid_s, tag, _ in reversed(entries):
        pid = int(pid_s)
        table = proc_table()
        members = family(pid, table)
        if not members:
            report.append(f"{tag}: pid {pid} already gone")
            continue
        for m in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(m, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(m) for m in members):
            time.sleep(0.5)
        left = [m for m in members if alive(m)]
        killed = sorted({(table.get(m, (0, 0, "?"))[2].split() or ["?"])[0].rsplit("/", 1)[-1] for m in left})
        for m in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(m, signal.SIGKILL)
        report.append(
            f"{tag}: pid {pid} and {len(members) - 1} descendant(s) stopped"
            + (f"; {len(left)} needed SIGKILL after {grace:g}s ({', '.join(killed)})" if left else "")
        )
        log(report[-1])
    pidfile.rename(state / "pids.stopped")
    return report


# ------------------------------------------------------------------------------------------------
# checks


def api_key(d: Deployment, state: Path) -> str:
    f = Path(d.head.path(d.vllm["secrets_file"]))
    if not f.is_file():
        f = state / Path(d.vllm["secrets_file"]).name
    return U.parse_env_file(f.read_text()).get("VLLM_API_KEY", "")


def http_json(url: str, key: str, payload: dict | None = None, timeout: float = 60) -> Any:
    req = urllib.request.Request(url, data=json.dumps(payload).encode() if payload else None)
    req.add_header("Authorization", f"Bearer {key}")
    if payload:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def stream_chat(base: str, model: str, key: str) -> dict[str, Any]:
    """One streamed chat completion; the reasoning and content deltas kept apart (deepseek_r1 parser)."""
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the cluster."}],
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    req = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(payload).encode())
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    t0 = time.monotonic()
    out: dict[str, Any] = {"reasoning": "", "content": "", "reasoning_chunks": 0, "content_chunks": 0}
    first = None
    with urllib.request.urlopen(req, timeout=120) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            msg = json.loads(data)
            if msg.get("usage"):
                out["usage"] = msg["usage"]
            for ch in msg.get("choices", []):
                delta = ch.get("delta", {})
                r_text = delta.get("reasoning") or delta.get("reasoning_content") or ""
                c_text = delta.get("content") or ""
                if (r_text or c_text) and first is None:
                    first = time.monotonic() - t0
                if r_text:
                    out["reasoning"] += r_text
                    out["reasoning_chunks"] += 1
                if c_text:
                    out["content"] += c_text
                    out["content_chunks"] += 1
                if ch.get("finish_reason"):
                    out["finish_reason"] = ch["finish_reason"]
    out["ttft_s"] = round(first or 0, 3)
    out["seconds"] = round(time.monotonic() - t0, 3)
    out["reasoning_split_ok"] = (
        "Reasoning:" in out["reasoning"]
        and "Hello from r1deploy" in out["content"]
        and "</think>" not in out["content"]
        and "Hello from r1deploy" not in out["reasoning"]
    )
    return out


NCCL_PATTERNS = re.compile(
    r"NCCL INFO (NCCL version|.*via (P2P|SHM|NET)|Using network|comm 0x[0-9a-f]+ rank \d+ nRanks \d+|"
    r".*Init COMPLETE|cudaDriverVersion|Connected all)"
)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def nccl_lines(paths: list[Path]) -> dict[str, Any]:
    lines: list[str] = []
    for p in paths:
        try:
            for line in ANSI.sub("", p.read_text(errors="replace")).splitlines():
                if NCCL_PATTERNS.search(line):
                    lines.append(line.strip()[:300])
        except OSError:
            continue
    seen, uniq = set(), []
    for line in lines:
        key = re.sub(r"^\(.*?\)\s*", "", line)
        key = re.sub(r"^\S+:\d+:\d+ \[\d+\] ", "", key)
        if key not in seen:
            seen.add(key)
            uniq.append(line)
    text = "\n".join(lines)
    versions = sorted(set(re.findall(r"NCCL version ([\d.]+\S*)", text)))
    vias = sorted(set(re.findall(r"via (P2P/[A-Za-z/]+|SHM(?:/[A-Za-z/]+)?|NET/[A-Za-z]+(?:/\d+)?)", text)))
    comms = sorted(
        set(
            re.findall(
                r"ncclCommInitRankConfig comm (0x[0-9a-f]+) rank (\d+) nranks (\d+) "
                r"cudaDev (\d+) nvmlDev (\d+) busId ([0-9a-f]+)",
                text,
            )
        )
    )
    nodes = sorted(set(re.findall(r"nRanks \d+ nNodes (\d+)", text)))
    return {
        "versions": versions,
        "transports": vias,
        "nccl_nodes_seen": nodes,
        "comms": [
            dict(zip(("comm", "rank", "nranks", "cuda_dev", "nvml_dev", "bus_id"), c, strict=False))
            for c in comms
        ],
        "lines": uniq[:80],
    }


def run_capture(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> dict[str, Any]:
    t = time.monotonic()
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        return {
            "rc": p.returncode,
            "stdout": p.stdout,
            "stderr": p.stderr[-4000:],
            "seconds": round(time.monotonic() - t, 1),
        }
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"rc": -1, "stdout": "", "stderr": repr(exc), "seconds": round(time.monotonic() - t, 1)}


def cmd_check(d: Deployment, state: Path, bench: bool, ready_timeout: float) -> dict[str, Any]:
    times = json.loads((state / "times.json").read_text()) if (state / "times.json").is_file() else {}
    res: dict[str, Any] = {"layout": d.dir.name, "vllm": d.vllm, "times": times}
    key = api_key(d, state)
    keyfile = state / "api.key"
    keyfile.write_text(f"VLLM_API_KEY={key}\n")
    keyfile.chmod(0o600)
    base, model = d.vllm["url"], d.vllm["served_model_name"]
    vllm_unit = d.head.unit("vllm.service")
    venv_python = command(d.head, U.service(vllm_unit, "ExecStart")[0])[1][0]
    venv_bin = str(Path(venv_python).parent)

    # 1. the role's own readiness probe (/health, /v1/models, one chat completion)
    probe = d.head.path("/opt/r1deploy/bin/r1deploy-vllm-ready")
    r = run_capture(
        [
            sys.executable,
            probe,
            "--url",
            base,
            "--model",
            model,
            "--key-file",
            str(keyfile),
            "--timeout",
            str(int(ready_timeout)),
        ],
        timeout=ready_timeout + 30,
    )
    try:
        res["readiness"] = json.loads(r["stdout"])
    except ValueError:
        res["readiness"] = {"ok": False, "detail": (r["stdout"] + r["stderr"])[-2000:]}
    if times.get("t0"):
        res["times"]["ready_after_launch_s"] = round(time.time() - times["t0"], 1)
    log(f"readiness: {json.dumps(res['readiness'])[:400]}")
    if not res["readiness"].get("ok"):
        res["ok"] = False
        return finish(res, state)

    # 2. /v1/models
    try:
        models = http_json(f"{base}/v1/models", key)
        res["models"] = [
            {"id": m["id"], "max_model_len": m.get("max_model_len"), "root": m.get("root")}
            for m in models.get("data", [])
        ]
    except (OSError, ValueError, urllib.error.URLError) as exc:
        res["models"] = {"error": repr(exc)}
    log(f"/v1/models: {res['models']}")

    # 3. streamed chat with the reasoning split
    try:
        res["stream"] = stream_chat(base, model, key)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        res["stream"] = {"error": repr(exc), "reasoning_split_ok": False}
    log(f"stream: reasoning={res['stream'].get('reasoning')!r} content={res['stream'].get('content')!r}")
    # With --load-format dummy (issue 18: real model shapes, random weights) the text is noise: the
    # stream is judged by streaming at all (completion tokens counted, a finish reason), not by words.
    vllm_argv = command(d.head, U.service(vllm_unit, "ExecStart")[0])[1]
    dummy = any(a == "dummy" and b == "--load-format" for b, a in itertools.pairwise(vllm_argv))
    if dummy and "error" not in res["stream"]:
        tokens = (res["stream"].get("usage") or {}).get("completion_tokens", 0)
        res["stream"]["dummy_weights"] = True
        res["stream"]["reasoning_split_ok"] = bool(tokens > 0 and res["stream"].get("finish_reason"))
        log(
            f"stream (dummy weights): {tokens} completion tokens, finish {res['stream'].get('finish_reason')}"
        )

    # 4. Ray: status and where the workers are
    addr = d.head.info["ray"]["address"]
    st = run_capture([f"{venv_bin}/ray", "status", "--address", addr], timeout=90)
    res["ray_status"] = (st["stdout"] or st["stderr"])[-3000:]
    rep = run_capture(
        [
            venv_python,
            str(HERE / "ray_report.py"),
            "--address",
            addr,
            "--tp",
            str(d.vllm["tensor_parallel_size"]),
            "--pp",
            str(d.vllm["pipeline_parallel_size"]),
        ],
        timeout=120,
    )
    try:
        res["ray"] = json.loads(rep["stdout"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        res["ray"] = {"error": (rep["stdout"] + rep["stderr"])[-2000:]}
    log(f"ray verdict: {json.dumps(res['ray'].get('verdict', res['ray']))[:600]}")

    # 5. GPUs held, NCCL from the logs (vLLM's own log carries its Ray workers' output)
    smi = run_capture(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory,gpu_bus_id", "--format=csv,noheader"], timeout=30
    )
    res["gpu_processes"] = smi["stdout"].strip().splitlines()
    logs = sorted(state.glob("*.log"))
    for h in d.hosts.values():
        unit = h.unit("ray-head.service") or h.unit("ray-worker.service")
        args = command(h, U.service(unit, "ExecStart")[0])[1] if unit else []
        tmp = next((a.split("=", 1)[1] for a in args if a.startswith("--temp-dir=")), "/tmp/ray")
        logs += sorted(Path(tmp).glob("session_latest/logs/worker-*"))
    res["nccl"] = nccl_lines(logs)
    log(f"NCCL: versions {res['nccl']['versions']} transports {res['nccl']['transports']}")

    # 6. r1deploy bench, short
    if bench:
        envb = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        b = run_capture(
            [
                sys.executable,
                "-m",
                "r1deploy.cli",
                "bench",
                "--url",
                f"{base}/v1",
                "--model",
                model,
                "--api-key-file",
                str(keyfile),
                "-c",
                "8",
                "-n",
                "64",
                "--prompt-tokens",
                "64",
                "--max-tokens",
                "64",
                "--ignore-eos",
                "--json",
            ],
            env=envb,
            timeout=300,
        )
        try:
            res["bench"] = json.loads(b["stdout"])
        except ValueError:
            res["bench"] = {"rc": b["rc"], "error": (b["stdout"] + b["stderr"])[-1500:]}
        s = res["bench"]
        log(
            "bench: "
            + json.dumps(
                {k: s.get(k) for k in ("ok", "completed", "output_throughput_tok_s", "ttft_ms", "tpot_ms")}
            )[:500]
        )
    v = res["ray"].get("verdict", {}) if isinstance(res["ray"], dict) else {}
    multi = len(d.hosts) > 1
    res["ok"] = bool(
        res["readiness"].get("ok")
        and res["stream"].get("reasoning_split_ok")
        and v.get("placement_group_on_every_gpu")
        and v.get("vllm_workers") == v.get("workers_expected")
        and (v.get("stages_on_different_nodes") if multi else True)
    )
    return finish(res, state)


def finish(res: dict[str, Any], state: Path) -> dict[str, Any]:
    (state / "summary.json").write_text(json.dumps(res, indent=1))
    log(f"{res.get('layout')}: {'PASS' if res.get('ok') else 'FAIL'}")
    return res


def cmd_lint(d: Deployment) -> int:
    bad = 0
    for host in d.hosts.values():
        for f in sorted((host.root / "etc/systemd/system").glob("*.service")):
            unit = U.read_unit(f)
            for key in ("ExecStartPre", "ExecStart"):
                for value in U.service(unit, key):
                    try:
                        _, argv = U.split_command(value)
                        problems = U.lint_command(argv)
                    except U.CommandError as exc:
                        argv, problems = [value[:80] + " ..."], [f"unparseable: {exc}"]
                    bad += bool(problems)
                    print(f"{host.name} {f.name} {key}: {' '.join(argv)}")
                    for p in problems:
                        print(f"  DEFECT: {p}")
            for value in U.service(unit, "EnvironmentFile"):
                path = host.path(value.lstrip("-"))
                state = (
                    "rendered"
                    if path.startswith(str(host.root))
                    else ("on this machine" if Path(path).exists() else "absent")
                )
                print(f"{host.name} {f.name} EnvironmentFile={value} ({state})")
    print("lint:", "DEFECTS FOUND" if bad else "ok")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="r1deploy GPU proof: run rendered units without systemd")
    ap.add_argument("command", choices=["lint", "up", "check", "down", "run"])
    ap.add_argument("rendered", type=Path, help="a folder written by playbooks/render_units.yml")
    ap.add_argument("--state", type=Path, help="PIDs, logs and results (default RENDERED/.proof)")
    ap.add_argument(
        "--generate-secrets",
        action="store_true",
        help="create a missing vllm-secrets.env (random key) in the state folder",
    )
    ap.add_argument("--bench", action="store_true", help="run a short r1deploy bench in check")
    ap.add_argument("--ready-timeout", type=float, default=600)
    args = ap.parse_args(argv)
    d = Deployment(args.rendered)
    state = (args.state or d.dir / ".proof").resolve()
    state.mkdir(parents=True, exist_ok=True)
    if args.command == "lint":
        return cmd_lint(d)
    if args.command == "up":
        cmd_up(d, state, args.generate_secrets)
        return 0
    if args.command == "down":
        cmd_down(state)
        return 0
    if args.command == "check":
        return 0 if cmd_check(d, state, args.bench, args.ready_timeout).get("ok") else 1
    # run
    ok = False
    try:
        cmd_up(d, state, args.generate_secrets)
        ok = bool(cmd_check(d, state, args.bench, args.ready_timeout).get("ok"))
    except (SystemExit, Exception) as exc:  # record why, then stop what was started
        log(f"{d.dir.name}: {type(exc).__name__}: {exc}")
        finish({"layout": d.dir.name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}, state)
    finally:
        t = time.monotonic()
        cmd_down(state)
        log(f"{d.dir.name}: stopped in {time.monotonic() - t:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
