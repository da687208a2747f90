"""Day-2 commands without a lab: the diagnose scrubber on planted secrets, the CLI's confirmation and
playbook mapping for reset/teardown/restart/diagnose on real (local) ansible-playbook runs."""

from __future__ import annotations

import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from r1deploy import cli, diagnose
from r1deploy.day2 import facts_from_run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runner-events" / "project"
INVENTORY = FIXTURES / "inventory.yml"

API_KEY = "Q7pWn3kT9vLx2RbY5mZc8HdF4sJg6NaE1uVoKiXt"  # the shape of the generated vllm_api_key
ADMIN_PASSWORD = "h4Rt9wQz2LmN8vXc5BkY7pDs"


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R1DEPLOY_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def _collected(tmp_path: Path) -> tuple[Path, Path]:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "vllm_api_key").write_text(API_KEY + "\n")
    (creds / "open_webui_admin_password").write_text(ADMIN_PASSWORD + " salt=abcdefgh12345678\n")
    folder = tmp_path / "r1deploy-diagnose-lab-1"
    (folder / "head" / "journal").mkdir(parents=True)
    (folder / "head" / "journal" / "vllm.service.log").write_text(
        f"INFO api_server.py args: api_key='{API_KEY}' model=r1-tiny max_tokens=64\n"
        f"curl -H 'Authorization: Bearer {API_KEY}x' http://10.0.0.1:8000/v1/models\n"
        "WEBUI_SECRET_KEY=abcdefghijklmnopqrstuvwxyz0123456789 and a token: hf_abcdefghijklmnopqrstuvwxyz\n"
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    )
    (folder / "head" / "pip-freeze-serving.txt").write_text("tiktoken==0.9.0\ntokenizers==0.21.0\n")
    (folder / "frontend").mkdir()
    (folder / "frontend" / "open-webui.log").write_text(f"admin login with {ADMIN_PASSWORD} ok\n")
    return creds, folder


def test_scrubber_removes_every_planted_secret_and_keeps_the_rest(tmp_path: Path) -> None:
    creds, folder = _collected(tmp_path)
    archive = tmp_path / "out" / f"{folder.name}.tar.gz"
    assert diagnose.main(["pack", "--credentials", str(creds), "--out", str(archive), str(folder)]) == 0
    assert archive.stat().st_mode & 0o777 == 0o600
    secrets = diagnose.load_secrets(creds)
    assert diagnose.archive_leaks(archive, secrets) == []
    with tarfile.open(archive) as tar:
        texts = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    journal = texts[f"{folder.name}/head/journal/vllm.service.log"]
    for leaked in (
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "hf_abcdefghij",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    ):
        assert leaked not in journal
    assert "[REDACTED:vllm_api_key]" in journal
    # What the operator needs stays readable.
    assert "model=r1-tiny max_tokens=64" in journal and "http://10.0.0.1:8000/v1/models" in journal
    assert "[REDACTED:open_webui_admin_password]" in texts[f"{folder.name}/frontend/open-webui.log"]
    assert texts[f"{folder.name}/head/pip-freeze-serving.txt"] == "tiktoken==0.9.0\ntokenizers==0.21.0\n"


def test_a_secret_that_survives_scrubbing_means_no_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    creds, folder = _collected(tmp_path)
    # A scrubber that misses (a new log format, an encoding it cannot read): the leak check must catch it.
    monkeypatch.setattr(diagnose, "scrub_tree", lambda root, secrets: diagnose.ScrubReport())
    archive = tmp_path / "out" / "a.tar.gz"
    assert diagnose.main(["pack", "--credentials", str(creds), "--out", str(archive), str(folder)]) == 1
    assert not archive.exists()
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and "head/journal/vllm.service.log: vllm_api_key" in doc["leaks"]


def test_find_leaks_reports_the_file_and_the_secret_name(tmp_path: Path) -> None:
    creds, folder = _collected(tmp_path)
    leaks = diagnose.find_leaks(folder, diagnose.load_secrets(creds))
    assert "head/journal/vllm.service.log: vllm_api_key" in leaks
    assert "frontend/open-webui.log: open_webui_admin_password" in leaks


def test_short_values_are_not_treated_as_secrets(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("abc\n")
    assert diagnose.load_secrets(tmp_path / "c") == {}


def test_day2_commands_are_registered() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"restart", "diagnose", "reset", "teardown", "upgrade"} <= set(sub.choices)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return code, json.loads(lines[0])


@pytest.fixture
def fake_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout whose day-2 playbooks only report the variables they were given and set a fact."""
    root = tmp_path / "project"
    (root / "playbooks").mkdir(parents=True)
    (root / "ansible.cfg").write_text("[defaults]\nhost_key_checking = True\nretry_files_enabled = False\n")
    play = (
        "- name: {name}\n  hosts: node1\n  gather_facts: false\n  tasks:\n"
        "    - name: Report\n      ansible.builtin.debug:\n"
        "        msg: \"{{{{ r1deploy_reset_confirm | default('no') }}}} {{{{ r1deploy_reset_remove_models"
        " | default('-') }}}} {{{{ r1deploy_reset_remove_webui_data | default('-') }}}}"
        " {{{{ r1deploy_restart_batch | default('-') }}}}{{{{ r1deploy_upgrade_lock | default('') }}}}\"\n"
        "    - name: A fact\n      ansible.builtin.set_fact:\n"
        "        r1deploy_restart_downtime_seconds: 12.5\n        r1deploy_diagnose_archive: /x/a.tar.gz\n"
    )
    for name in ("reset", "teardown", "restart", "diagnose", "upgrade"):
        (root / "playbooks" / f"{name}.yml").write_text(play.format(name=name))
    monkeypatch.setenv("R1DEPLOY_ROOT", str(root))
    return root


def _messages(run_dir: str) -> list[str]:
    out = []
    for line in Path(run_dir, "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "runner_on_ok" and "msg" in event["event_data"]["res"]:
            out.append(str(event["event_data"]["res"]["msg"]))
    return out


def test_reset_asks_and_refuses_without_confirmation(
    fake_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115  not a terminal, no --yes
    code, doc = run_json(capsys, "reset", "-i", str(INVENTORY))
    assert code == 2 and "not confirmed" in doc["errors"][0]
    assert not list((fake_project.parent / "state").rglob("events.jsonl"))  # nothing ran


def test_reset_keeps_models_and_chats_unless_asked(
    fake_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(capsys, "reset", "-i", str(INVENTORY), "--limit", "node1", "--yes")
    assert code == 0 and doc["playbooks"] == ["playbooks/reset.yml"]
    assert _messages(doc["run_dir"]) == ["yes False False -"]
    code, doc = run_json(
        capsys, "reset", "-i", str(INVENTORY), "-l", "node1", "-y", "--remove-models", "--remove-webui-data"
    )
    assert _messages(doc["run_dir"]) == ["yes True True -"]


def test_teardown_is_reset_and_purge_removes_the_data(
    fake_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["teardown", "-i", str(INVENTORY), "-l", "node1", "--yes", "--purge", "--json"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert code == 0 and doc["playbooks"] == ["playbooks/teardown.yml"]
    assert _messages(doc["run_dir"]) == ["yes True True -"]
    assert "now `r1deploy reset`" in captured.err


def test_restart_passes_the_batch_and_reports_the_downtime(
    fake_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(capsys, "restart", "-i", str(INVENTORY), "-l", "node1", "--batch", "3")
    assert code == 0 and doc["playbooks"] == ["playbooks/restart.yml"]
    assert _messages(doc["run_dir"]) == ["no - - 3"]
    assert doc["facts"]["r1deploy_restart_downtime_seconds"] == 12.5
    assert cli.main(["restart", "-i", str(INVENTORY), "-l", "node1", "--plain"]) == 0
    assert "API downtime: 12.5 s" in capsys.readouterr().out
    assert cli.main(["restart", "-i", str(INVENTORY), "--batch", "0"]) == 2


def test_diagnose_prints_the_archive(fake_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "diagnose", "-i", str(INVENTORY), "-l", "node1")
    assert code == 0 and doc["playbooks"] == ["playbooks/diagnose.yml"]
    assert facts_from_run(doc["run_dir"], "r1deploy_diagnose_archive") == {
        "r1deploy_diagnose_archive": "/x/a.tar.gz"
    }


def test_upgrade_needs_an_existing_lock_and_passes_its_path(
    fake_project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, doc = run_json(capsys, "upgrade", "-i", str(INVENTORY), "--lock", str(tmp_path / "missing.txt"))
    assert code == 2 and "no such file" in doc["errors"][0]
    lock = tmp_path / "new.txt"
    lock.write_text("vllm==0.19.1\n")
    code, doc = run_json(capsys, "upgrade", "-i", str(INVENTORY), "-l", "node1", "--lock", str(lock))
    assert code == 0 and doc["playbooks"] == ["playbooks/upgrade.yml"]
    assert _messages(doc["run_dir"]) == [f"no - - -{lock}"]
