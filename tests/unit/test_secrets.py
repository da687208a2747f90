"""Secrets never reach run folders, output or the process list.

The end-to-end tests run a real ansible-playbook (local connection) through the CLI with a playbook
that leaks a freshly generated key every way it can, then search everything the CLI left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from r1deploy import cli
from r1deploy.secrets import REDACTED, Scrubber, scrubber_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runner-events" / "project"


# ---- the scrubber ------------------------------------------------------------------------------------


def test_known_values_are_replaced_everywhere_in_nested_data() -> None:
    scrub = Scrubber()
    scrub.add("s3cret-value-XYZ")
    data = {"msg": "key s3cret-value-XYZ here", "list": ["a", {"deep": "xs3cret-value-XYZx"}], "n": 3}
    out = scrub(data)
    assert "s3cret-value-XYZ" not in json.dumps(out)
    assert out["msg"] == f"key {REDACTED} here"
    assert out["n"] == 3


def test_short_values_are_not_scrubbed() -> None:
    scrub = Scrubber()
    scrub.add("true")
    assert scrub("true story") == "true story"


def test_secret_shaped_text_is_scrubbed_without_knowing_the_value() -> None:
    scrub = Scrubber()
    assert scrub("VLLM_API_KEY=abcdef123456") == f"VLLM_API_KEY={REDACTED}"
    assert scrub("WEBUI_SECRET_KEY=zzz") == f"WEBUI_SECRET_KEY={REDACTED}"
    assert scrub("Authorization: Bearer tok-123456789") == f"Authorization: Bearer {REDACTED}"
    assert scrub('{"Authorization": "Bearer abcdefghijk"}') == '{"Authorization": "Bearer ' + REDACTED + '"}'
    assert scrub("run --api-key abc123 --port 8000") == f"run --api-key {REDACTED} --port 8000"
    assert scrub({"admin_password": "hunter2hunter2", "password": 5}) == {
        "admin_password": REDACTED,
        "password": REDACTED,
    }
    # Ordinary words and counters are left alone.
    assert scrub({"max_tokens": 128, "prompt_tokens": 7, "tokens": 3}) == {
        "max_tokens": 128,
        "prompt_tokens": 7,
        "tokens": 3,
    }


def test_scrubber_reads_credentials_vault_files_and_environment(tmp_path: Path) -> None:
    inventory = tmp_path / "inv"
    (inventory / "credentials").mkdir(parents=True)
    (inventory / "hosts.yml").write_text("all: {}\n")
    (inventory / "credentials" / "vllm_api_key").write_text("cred-value-1234567\n")
    (inventory / "credentials" / "secrets.env").write_text("OTHER=env-value-7654321\n")
    vault = tmp_path / "vault-pass"
    vault.write_text("vault-pass-0000000\n")
    scrub = scrubber_for(
        inventory / "hosts.yml",
        vault_specs=[f"prod@{vault}"],
        environ={"R1DEPLOY_API_KEY": "env-key-99999999"},
    )
    text = "cred-value-1234567 env-value-7654321 vault-pass-0000000 env-key-99999999"
    assert scrub(text) == " ".join([REDACTED] * 4)


# ---- end to end through the CLI ----------------------------------------------------------------------


def _inventory(tmp_path: Path, key: str) -> Path:
    inventory = tmp_path / "site"
    (inventory / "credentials").mkdir(parents=True)
    shutil.copy(FIXTURES / "inventory.yml", inventory / "hosts.yml")
    (inventory / "credentials" / "vllm_api_key").write_text(key + "\n")
    os.chmod(inventory / "credentials" / "vllm_api_key", 0o600)
    return inventory / "hosts.yml"


class CmdlineWatcher(threading.Thread):
    """Reads every process's command line every few ms while the CLI runs."""

    def __init__(self, needles: list[str]) -> None:
        super().__init__(daemon=True)
        self.needles = [n.encode() for n in needles]
        self.stop = threading.Event()
        self.hits: list[str] = []
        self.scans = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(n in cmdline for n in self.needles):
                    self.hits.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
            self.scans += 1
            self.stop.wait(0.005)


@pytest.mark.parametrize("json_mode", [False, True])
def test_planted_secret_appears_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], json_mode: bool
) -> None:
    key = "planted-" + secrets.token_hex(16)
    env_key = "envkey-" + secrets.token_hex(16)
    inventory = _inventory(tmp_path, key)
    state = tmp_path / "state"
    private_parent = tmp_path / "tmp"
    private_parent.mkdir()
    monkeypatch.setenv("R1DEPLOY_STATE_DIR", str(state))
    monkeypatch.setenv("R1DEPLOY_API_KEY", env_key)
    monkeypatch.setattr(tempfile, "tempdir", str(private_parent))
    watcher = CmdlineWatcher([key, env_key])
    watcher.start()
    argv = ["run", str(FIXTURES / "playbooks" / "leak.yml"), "-i", str(inventory)]
    code = cli.main([*argv, "--json"] if json_mode else argv)
    watcher.stop.set()
    watcher.join()
    out, err = capfd.readouterr()

    assert code == 1  # the last task fails
    assert watcher.scans > 10 and watcher.hits == []
    assert key not in out + err and env_key not in out + err
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"command.json", "events.jsonl", "summary.json", "stdout.txt"}
    for path in files:
        content = path.read_text(errors="replace")
        assert key not in content, path
        assert env_key not in content, path
    # The leaks did happen and were replaced (so this test can fail).
    events = (next(p for p in files if p.name == "events.jsonl")).read_text()
    assert f"the key is {REDACTED}" in events
    assert f"env key {REDACTED}" in events
    assert f"VLLM_API_KEY={REDACTED}" in events
    summary = json.loads(next(p for p in files if p.name == "summary.json").read_text())
    assert summary["failures"][0]["stderr_tail"] == ["about to fail", REDACTED]
    if json_mode:
        assert json.loads(out)["failures"][0]["stderr_tail"] == ["about to fail", REDACTED]
    # The fresh private data dir is gone.
    assert list(private_parent.iterdir()) == []
