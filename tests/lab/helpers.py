"""Helpers for lab tests: run playbooks and ad-hoc commands against the lab like an operator would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    rc: int
    output: str
    seconds: float
    recap: dict[str, dict[str, int]]
    stdout: str = ""  # the command's stdout alone (CLI runs)

    def total(self, key: str) -> int:
        return sum(stats[key] for stats in self.recap.values())

    def changed_tasks(self) -> list[str]:
        """Names of tasks reported changed (from the default callback's output)."""
        changed, task = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line[6 : line.rfind("]")]
            elif line.startswith("changed:"):
                changed.append(f"{task} -> {line.split('[', 1)[1].split(']', 1)[0]}")
        return changed


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_playbook(inventory: Path, playbook: str, *args: str, timeout: float = 3600) -> PlaybookRun:
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / playbook), *args],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    recap = {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        for m in RECAP.finditer(output)
    }
    return PlaybookRun(proc.returncode, output, round(time.monotonic() - start, 1), recap)


# The recap lines of the CLI's plain view (r1deploy.progress.recap_text).
CLI_RECAP = re.compile(
    r"^(?P<host>\S+)\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+failed=(?P<failed>\d+)"
    r"\s+unreachable=(?P<unreachable>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)"
    r"\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


def run_cli_deploy(inventory: Path, timeout: float = 3600) -> PlaybookRun:
    """`r1deploy deploy -i INVENTORY --plain`, as the README's newcomer path runs it (stdout only in
    ``output``: the closing block must be the last thing a user reads there; stderr is appended after
    a marker for failures)."""
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "r1deploy"), "deploy", "-i", str(inventory), "--plain"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    recap = {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        for m in CLI_RECAP.finditer(proc.stdout)
    }
    output = proc.stdout + (f"\n--- stderr ---\n{proc.stderr}" if proc.stderr.strip() else "")
    return PlaybookRun(proc.returncode, output, round(time.monotonic() - start, 1), recap, proc.stdout)


def on_host(inventory: Path, host: str, command: str, become: bool = True, timeout: float = 300) -> str:
    """Run a shell command on a lab host over SSH (Ansible's shell module); return stdout, raise on error."""
    argv = [str(BIN / "ansible"), host, "-i", str(inventory), "-m", "ansible.builtin.shell", "-a", command]
    if become:
        argv.append("--become")
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.json"  # not profile_tasks: stdout must be pure JSON
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
        result = tasks[0]["hosts"][host]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(
            f"{host}: {command!r} gave no result: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        ) from exc
    if result.get("rc", 1) != 0 or result.get("failed") or result.get("unreachable"):
        raise AssertionError(f"{host}: {command!r} failed: {result.get('stderr') or result.get('msg')}")
    return str(result.get("stdout", ""))


def inventory_groups(inventory: Path) -> dict[str, dict[str, str]]:
    """{group: {host: r1deploy_node_ip}} from the inventory, as Ansible resolves it."""
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(proc.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})

    def hosts_of(group: str) -> list[str]:
        entry = data.get(group, {})
        found = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            found += hosts_of(child)
        return found

    return {
        group: {h: hostvars[h].get("r1deploy_node_ip", "") for h in hosts_of(group)}
        for group in ("ray_head", "ray_workers", "gpu_nodes", "frontend")
    }
