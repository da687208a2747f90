"""The first hour of a new user, in the README's order, on the session's own clean lab name.

1. ``make demo`` = ``r1deploy lab up`` + ``r1deploy deploy -i inventories/<lab>``: the session's `lab` and
   `deployed_lab` fixtures run exactly these two commands (tests/lab/conftest.py, deployed.py) on a
   lab name that must not exist yet (the fixture refuses a lab that is already up). No second deploy:
   these tests read what that one deploy printed.
2. The deploy's output ends with one block: the chat URL, the admin email, how to read the password
   (never the password itself), the API base URLs and where the key is, the next commands.
3. A user signs in to the chat page with exactly what the block says, reaches the API with the key
   from the file it names, and runs the first next command it prints (``r1deploy smoke``) as printed.
   ``r1deploy status`` prints the same pointers: tests/lab/test_cli.py's status test.
"""

from __future__ import annotations

import json
import re
import shlex
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.lab.helpers import BIN, REPO, ansible_env

pytestmark = [pytest.mark.lab, pytest.mark.deployed]

KEYS = (
    "chat",
    "  from elsewhere",
    "admin email",
    "admin password",
    "API base URL",
    "API key",
    "metrics",
    "next",
)
ROW = re.compile(rf"^(?P<key>{'|'.join(KEYS)})\s{{2,}}(?P<v>.+)$")


def closing_block(stdout: str) -> tuple[dict[str, str], list[str], list[str]]:
    """(rows, next commands, lines after the block) of the deploy's closing block."""
    lines = stdout.rstrip("\n").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("-- your stack ")]
    assert starts, f"no closing block in the deploy's output:\n{stdout[-3000:]}"
    block, rows, commands = lines[starts[-1] + 1 :], {}, []
    end = next(i for i, line in enumerate(block) if set(line) == {"-"})
    for line in block[:end]:
        match = ROW.match(line)
        if match:
            rows[match["key"].strip()] = match["v"].strip()
            if match["key"] == "next":
                commands.append(match["v"].strip())
        else:
            assert line.startswith(" ") and rows, f"unexpected line in the block: {line!r}"
            commands.append(line.strip())
    return rows, commands, block[end + 1 :]


@pytest.fixture(scope="module")
def block(deployed_lab: Any) -> tuple[dict[str, str], list[str], list[str]]:
    return closing_block(deployed_lab.first_run.stdout)


def _lab_name(deployed_lab: Any) -> str:
    return Path(deployed_lab.inventory).name


def test_deploy_ends_with_the_sign_in_block(deployed_lab: Any, lab: Any, block: Any) -> None:
    rows, commands, after = block
    assert after == [], f"the block is not the last thing printed: {after}"
    inventory = Path(deployed_lab.inventory)
    frontend = next(h for h in lab.hosts if h.group == "frontend")
    head_ip = next(iter(deployed_lab.groups["ray_head"].values()))
    assert rows["chat"] == f"https://{frontend.public_ip}"
    assert rows["from elsewhere"].startswith(f"ssh -N -L 8443:{frontend.public_ip}:443 ")
    assert rows["admin email"] == "admin@r1deploy.lab"
    password = (inventory / "credentials" / "open_webui_admin_password").read_text().strip()
    password_file = f"inventories/{inventory.name}/credentials/open_webui_admin_password"
    assert rows["admin password"].startswith(f"cat {password_file}")
    assert password not in deployed_lab.first_run.stdout  # shown where it is, never itself
    assert rows["API base URL"] == f"http://{head_ip}:8000/v1  or  https://{frontend.public_ip}/v1"
    assert f"inventories/{inventory.name}/credentials/vllm_api_key" in rows["API key"]
    assert deployed_lab.api_key not in deployed_lab.first_run.stdout  # the API key itself: never
    shown = f"inventories/{inventory.name}"
    down = "make lab-down" if inventory.name == "lab" else f"r1deploy lab down --name {inventory.name}"
    assert commands == [f"r1deploy smoke -i {shown}", f"r1deploy bench -i {shown}", down]


def test_a_new_user_signs_in_with_what_the_block_says(block: Any) -> None:
    rows, _, _ = block
    context = ssl.create_default_context()
    context.check_hostname = False  # the lab's self-signed certificate (test_frontend trusts it exactly)
    context.verify_mode = ssl.CERT_NONE
    # Run the command the block gives, as the user would.
    command = shlex.split(rows["admin password"].split("   ")[0])
    shown = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    body = json.dumps({"email": rows["admin email"], "password": shown.stdout.strip()})
    request = urllib.request.Request(
        f"{rows['chat']}/api/v1/auths/signin",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=60) as answer:
        assert answer.status == 200
        assert json.loads(answer.read())["token"]


def test_the_api_answers_at_the_block_s_url_with_the_key_it_points_to(block: Any) -> None:
    rows, _, _ = block
    url = rows["API base URL"].split()[0]
    key_file = REPO / re.search(r"in (\S+)", rows["API key"]).group(1)  # type: ignore[union-attr]
    key = key_file.read_text().strip()
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert [m["id"] for m in json.loads(answer.read())["data"]] == ["r1-tiny"]


def test_the_first_next_command_works_as_printed(block: Any) -> None:
    _, commands, _ = block
    argv = shlex.split(commands[0])
    assert argv[:2] == ["r1deploy", "smoke"]
    proc = subprocess.run(
        [str(BIN / "r1deploy"), *argv[1:]],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
