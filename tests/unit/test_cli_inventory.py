"""A broken inventory is bad input, and inventory values that feed play keywords reach them.

Real `r1deploy` and `ansible-playbook` runs on copies of the sample inventory; nothing contacts a host
(the inventory is refused before any play, and stage 1 runs on the controller only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from r1deploy import cli
from r1deploy.inventory_input import check_files, play_keyword_vars
from r1deploy.runner import BadInput, RunRequest, ansible_playbook_argv

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "inventories" / "sample"
BIN = Path(sys.executable).parent
BROKEN_YAML = "all:\n  children:\n    gpu_nodes: [\n  oops\n"


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R1DEPLOY_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def sample(tmp_path: Path) -> Path:
    inv = tmp_path / "site"
    shutil.copytree(SAMPLE, inv)
    main = inv / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text().replace("r1deploy_unedited_sample: true\n", ""))
    return inv


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return code, json.loads(lines[0])


@pytest.mark.parametrize("broken", ["hosts.yml", "group_vars/all/gpu.yml"])
def test_cli_refuses_a_broken_inventory_naming_the_file_and_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state_dir: Path, broken: str
) -> None:
    inv = sample(tmp_path)
    (inv / broken).write_text(BROKEN_YAML)
    for command in ("check", "deploy"):
        code, doc = run_json(capsys, command, "-i", str(inv))
        assert code == 2 and doc["status"] == "refused"
        (message,) = doc["errors"]
        assert f"{inv / broken}: line 5, column 1" in message
        assert "expected ',' or ']'" in message  # the parser's own words
    assert not (state_dir / "runs").exists()  # refused before any run


def test_ansible_playbook_fails_on_a_broken_inventory_too(tmp_path: Path) -> None:
    """ansible.cfg's [inventory] unparsed_is_failed / any_unparsed_is_failed (ansible-core 2.19)."""
    inv = sample(tmp_path)
    # A folder with one good source and one broken one: Ansible alone would run on the good one.
    (inv / "extra.yml").write_text(BROKEN_YAML)
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), "playbooks/boilerplate.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "PLAY [" not in out, out[-3000:]
    assert str(inv / "extra.yml") in out and "Failed to parse" in out


def test_the_credentials_folder_is_still_not_parsed(tmp_path: Path) -> None:
    """Secrets next to the inventory are ignored (ignore_patterns), not refused as broken inventory."""
    inv = sample(tmp_path)
    (inv / "credentials").mkdir()
    (inv / "credentials" / "vllm_api_key").write_text("not: [yaml\n")
    check_files(inv)  # no BadInput
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inv), "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(json.loads(proc.stdout)["_meta"]["hostvars"]) == {"gpu01", "gpu02", "web01"}


def test_vault_values_and_encrypted_files_pass_the_syntax_check(tmp_path: Path) -> None:
    inv = sample(tmp_path)
    (inv / "group_vars" / "all" / "vault.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n6162636465\n")
    (inv / "group_vars" / "all" / "inline.yml").write_text(
        "secret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\nplain: !unsafe '{{ x }}'\n"
    )
    check_files(inv)
    (inv / "group_vars" / "all" / "inline.yml").write_text("secret: [\n")
    with pytest.raises(BadInput, match=r"inline\.yml: line 2"):
        check_files(inv)


def test_play_keyword_values_are_read_from_the_inventory(tmp_path: Path) -> None:
    inv = sample(tmp_path)
    assert play_keyword_vars(inv) == {"r1deploy_gpu_reboot_batch": 1}
    gpu = inv / "group_vars" / "all" / "gpu.yml"
    gpu.write_text(gpu.read_text().replace("r1deploy_gpu_reboot_batch: 1", "r1deploy_gpu_reboot_batch: 2"))
    assert play_keyword_vars(inv) == {"r1deploy_gpu_reboot_batch": 2}
    # Two values (a host override): nothing is passed; preflight refuses the run instead.
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "gpu02.yml").write_text("r1deploy_gpu_reboot_batch: 3\n")
    assert play_keyword_vars(inv) == {}
    (inv / "host_vars" / "gpu02.yml").unlink()
    gpu.write_text(gpu.read_text().replace("batch: 2", 'batch: "{{ n }}"'))
    assert play_keyword_vars(inv) == {}  # a template: judged by preflight, not guessed here


def test_the_operators_own_extra_vars_still_win(tmp_path: Path) -> None:
    request = RunRequest(
        command="deploy",
        playbooks=[REPO / "playbooks" / "site.yml"],
        inventory=SAMPLE,
        extra_var_files=[tmp_path / "mine.yml"],
    )
    argv = ansible_playbook_argv(request, keywords_file=tmp_path / "keywords.json")
    assert argv.index(f"@{tmp_path / 'keywords.json'}") < argv.index(f"@{tmp_path / 'mine.yml'}")
