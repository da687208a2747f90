"""Secrets stay secret: no generated or planted secret shows up anywhere a user or a log can see it.

The secrets are the values in the lab inventory's credentials folder (the vLLM key, Open WebUI's
secret key and admin password, the Ray token when there is one), plus values planted for this test
in a failing run. After the session's deploy, `r1deploy status`, `r1deploy smoke` and a run that
fails on purpose (a planted Open WebUI secret key that differs from the deployed one), none of them
may appear in:

- the deploy's output, the CLI's output, the CLI's run folders (R1DEPLOY_STATE_DIR);
- the command line of any process on the controller (sampled while the CLI runs) or on any host;
- any host's journal (every field, so also the _CMDLINE of whoever logged), /var/log, Ray's logs;
- any file an unprivileged user can read on any host (searched as `nobody`) or on the controller
  (the checkout, the run folders, test-artifacts).

Controls make sure each search can find something: a canary value is logged to the journal, written
to a world-readable file and put on a command line on every host, and must be found there; the
root-only secrets files must contain the secrets when read as root.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.lab.helpers import REPO

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

BIN = Path(sys.executable).parent
DOCKER = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"
NOT_SECRETS = {"lab_known_hosts", "lab_ssh_ed25519.pub"}
EXPECTED = {"vllm_api_key", "open_webui_secret_key", "open_webui_admin_password"}
MAX_FILE = 20 * 1024 * 1024
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".ruff_cache", ".pytest_cache"}

# Runs on each lab host as root (docker exec -i); the patterns arrive on stdin, never in argv.
HOST_SCAN = r"""
set -u
umask 077
pat=$(mktemp /run/r1deploy-secret-scan.XXXXXX)
cat > "$pat"
canary=$(head -n 1 "$pat")
logger -t r1deploy-secret-scan "control $canary"
printf 'control %s\n' "$canary" > /tmp/r1deploy-secret-canary && chmod 0644 /tmp/r1deploy-secret-canary
python3 -c 'import time; time.sleep(60)' "$canary" & sleeper=$!
sleep 1
scan() { grep -a -o -F -f "$pat" | sort -u; }
echo "== journal"
journalctl -o export --no-pager 2>/dev/null | scan
echo "== cmdline"
for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f" 2>/dev/null; echo; done | scan
echo "== logs"
{ find /var/log -type f -size -20M -print0 2>/dev/null
  find /var/lib/r1deploy /tmp /var/tmp -path '*/logs/*' -type f -size -20M -print0 2>/dev/null
} | xargs -0 -r grep -a -o -H -F -f "$pat" 2>/dev/null | sort -u
echo "== world"
runuser -u nobody -- grep -r -a -o -H -F -f - --devices=skip --exclude-dir=venv --exclude-dir=models \
  --exclude-dir=archives --exclude-dir=site-packages \
  /etc /var /opt /srv /tmp /home /root /run /usr/local < "$pat" 2>/dev/null | sort -u
echo "== root-only control"
grep -a -o -h -F -f "$pat" /etc/open-webui/secrets.env /etc/r1deploy/vllm-secrets.env 2>/dev/null | sort -u
echo "== end"
kill "$sleeper" 2>/dev/null
rm -f "$pat" /tmp/r1deploy-secret-canary
"""


def _cli(state_dir: Path, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, R1DEPLOY_STATE_DIR=str(state_dir))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(BIN / "r1deploy"), *argv, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CmdlineSampler:
    """Every distinct process command line on the controller while it runs (every 0.2 s)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        raw = (entry / "cmdline").read_bytes()
                    except OSError:
                        continue
                    self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.2)

    def __enter__(self) -> CmdlineSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def secrets(deployed_lab) -> dict[str, str]:
    creds = Path(deployed_lab.inventory) / "credentials"
    found = {
        p.name: p.read_text().strip()
        for p in sorted(creds.iterdir())
        if p.is_file() and p.name not in NOT_SECRETS
    }
    # The private key as a whole is multi-line: its longest base64 line stands for it.
    if "lab_ssh_ed25519" in found:
        found["lab_ssh_ed25519"] = max(found["lab_ssh_ed25519"].splitlines(), key=len)
    assert set(found) >= EXPECTED, sorted(found)
    return {name: value for name, value in found.items() if len(value) >= 8}


@pytest.fixture(scope="module")
def runs(deployed_lab, secrets, tmp_path_factory) -> Iterator[dict]:
    """status, smoke and a failing run through the CLI, with planted secrets; their outputs and
    run folders, and the controller's command lines meanwhile."""
    state_dir = tmp_path_factory.mktemp("r1deploy-state")
    planted = {
        "planted_open_webui_secret_key": f"planted{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "planted_open_webui_admin_password": f"planted{uuid.uuid4().hex}",
    }
    vars_file = tmp_path_factory.mktemp("planted") / "planted.yml"
    vars_file.touch(mode=0o600)
    vars_file.write_text(
        yaml.safe_dump(
            {
                "open_webui_secret_key": planted["planted_open_webui_secret_key"],
                "open_webui_admin_password": planted["planted_open_webui_admin_password"],
            }
        )
    )
    inventory = str(deployed_lab.inventory)
    with CmdlineSampler() as sampler:
        status = _cli(state_dir, "status", "-i", inventory)
        smoke = _cli(state_dir, "smoke", "-i", inventory)
        failing = _cli(state_dir, "run", "frontend", "-i", inventory, "-e", f"@{vars_file}")
    yield {
        "state_dir": state_dir,
        "planted": planted,
        "outputs": {"status": status, "smoke": smoke, "failing": failing},
        "cmdlines": sampler.seen,
        "vars_file": vars_file,
    }
    vars_file.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def all_secrets(secrets, runs) -> dict[str, str]:
    return {**secrets, **runs["planted"]}


def _found(text: str, values: dict[str, str]) -> list[str]:
    return sorted(name for name, value in values.items() if value in text)


def test_the_runs_did_what_they_should(runs) -> None:
    out = runs["outputs"]
    assert out["status"].returncode == 0, out["status"].stderr[-3000:]
    assert out["smoke"].returncode == 0, out["smoke"].stderr[-3000:]
    assert out["failing"].returncode in (1, 2), out["failing"].stdout[-3000:] + out["failing"].stderr[-3000:]
    assert "differs from open_webui_secret_key" in out["failing"].stdout + out["failing"].stderr
    assert len(list((runs["state_dir"] / "runs").iterdir())) >= 2


def test_no_secret_in_the_deploy_and_cli_output(deployed_lab, runs, all_secrets) -> None:
    leaks = {"deploy": _found(deployed_lab.first_run.output, all_secrets)}
    for name, proc in runs["outputs"].items():
        leaks[name] = _found(proc.stdout + proc.stderr, all_secrets)
    assert not any(leaks.values()), leaks


def test_no_secret_in_the_run_folders(runs, all_secrets) -> None:
    files = [p for p in runs["state_dir"].rglob("*") if p.is_file()]
    assert any(p.name == "events.jsonl" for p in files)
    leaks = {str(p): _found(p.read_text(errors="replace"), all_secrets) for p in files}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}


def test_no_secret_on_a_controller_command_line(runs, all_secrets) -> None:
    assert any("ansible-playbook" in c for c in runs["cmdlines"]), "the sampler saw no Ansible run"
    leaks = _found("\n".join(runs["cmdlines"]), all_secrets)
    assert not leaks, leaks


def _world_readable(path: Path, root: Path) -> bool:
    """Readable by any user once `root` is reached: o+r on the file, o+x on every folder below root."""
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    parent = path.parent
    while parent != root and root in parent.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
        parent = parent.parent
    return True


def test_no_secret_in_a_world_readable_file_on_the_controller(runs, all_secrets) -> None:
    roots = [REPO, runs["state_dir"]]
    leaks: dict[str, list[str]] = {}
    searched = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    too_big = path.is_file() and path.stat().st_size > MAX_FILE
                    if not path.is_file() or too_big or not _world_readable(path, root):
                        continue
                    text = path.read_bytes().decode(errors="replace")
                except OSError:
                    continue
                searched += 1
                if found := _found(text, all_secrets):
                    leaks[str(path)] = found
    assert searched > 100, f"searched only {searched} files"
    assert not leaks, leaks


@pytest.fixture(scope="module")
def host_scans(lab, runs, all_secrets) -> dict[str, dict[str, str]]:
    canary = f"r1deploy-canary-{uuid.uuid4().hex}"
    patterns = "\n".join([canary, *all_secrets.values()]) + "\n"
    scans = {}
    for host in lab.hosts:
        proc = subprocess.run(
            [DOCKER, "exec", "-i", host.name, "bash", "-c", HOST_SCAN],
            input=patterns,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert "== end" in proc.stdout, f"{host.name}: scan did not finish: {proc.stderr[-2000:]}"
        sections: dict[str, str] = {}
        current = ""
        for line in proc.stdout.splitlines():
            if line.startswith("== "):
                current = line[3:]
                sections[current] = ""
            else:
                sections[current] += line + "\n"
        sections["canary"] = canary
        scans[host.name] = sections
    return scans


@pytest.mark.parametrize("place", ["journal", "cmdline", "logs", "world"])
def test_no_secret_on_any_host(host_scans, all_secrets, place) -> None:
    leaks = {}
    for host, sections in host_scans.items():
        text = sections[place]
        if place != "logs":  # the canary was logged, written and run, but not into a log file
            assert sections["canary"] in text, f"{host}: the control value was not found in {place}"
        if found := _found(text, all_secrets):
            where = sorted({line.rsplit(":", 1)[0] for line in text.splitlines() if ":" in line})
            leaks[host] = {"secrets": found, "where": where[:20] if place in ("logs", "world") else place}
    assert not leaks, leaks


def test_the_root_only_files_do_hold_the_secrets(lab, host_scans, secrets) -> None:
    """Control for the searches above: read as root, the secrets files contain the secrets."""
    frontend = host_scans[lab.frontend.name]["root-only control"]
    head = host_scans[lab.head.name]["root-only control"]
    assert secrets["open_webui_secret_key"] in frontend
    assert secrets["open_webui_admin_password"] in frontend
    assert secrets["vllm_api_key"] in frontend and secrets["vllm_api_key"] in head
