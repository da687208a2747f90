"""The closing block of `r1deploy deploy` / `r1deploy status`: sign-in pointers, never a site's secret."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from r1deploy import pointers
from r1deploy.lab.inventory import dump
from r1deploy.status import Endpoints

REPO = Path(__file__).resolve().parents[2]


def endpoints(credentials: Path) -> Endpoints:
    return Endpoints(
        head="gpu01",
        vllm_url="http://10.0.0.11:8000/v1",
        model="m",
        credentials_dir=credentials,
        public_url="https://10.0.0.20",
        frontends=["web01"],
        nginx_vllm_route=True,
        webui_admin_email="admin@example.com",
        prometheus_url="https://10.0.0.20/prometheus/",
    )


def site(tmp_path: Path, lab: str | None) -> Path:
    inv = tmp_path / (lab or "mysite")
    shutil.copytree(REPO / "inventories" / "sample", inv)
    if lab is not None:  # what `r1deploy lab up` writes
        (inv / "group_vars" / "all" / "lab.yml").write_text(dump({"ansible_user": "ansible"}, lab))
    (inv / "credentials").mkdir()
    (inv / "credentials" / "open_webui_admin_password").write_text("s3cret-password-value\n")
    (inv / "credentials" / "vllm_api_key").write_text("s3cret-api-key-value\n")
    return inv


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_a_real_site_gets_pointers_and_no_secret(tmp_path: Path) -> None:
    inv = site(tmp_path, None)
    found = pointers.build(inv, endpoints(inv / "credentials"))
    text = pointers.render(found)
    assert found.lab is None and found.tunnel is None
    assert "s3cret" not in text and "s3cret" not in repr(found.as_dict())
    assert "chat            https://10.0.0.20" in text
    assert "admin email     admin@example.com" in text
    assert "in mysite/credentials/open_webui_admin_password" in text
    assert "http://10.0.0.11:8000/v1  or  https://10.0.0.20/v1" in text
    assert "in mysite/credentials/vllm_api_key" in text
    assert (
        "metrics         https://10.0.0.20/prometheus/   "
        "(user prometheus, password in mysite/credentials/prometheus_web_password)" in text
    )
    assert found.next_commands == ["r1deploy smoke -i mysite", "r1deploy bench -i mysite"]


@pytest.mark.parametrize(
    ("lab", "down"), [("lab", "make lab-down"), ("lab-x", "r1deploy lab down --name lab-x")]
)
def test_a_lab_shows_how_to_read_its_password_a_tunnel_and_how_to_take_it_down(
    tmp_path: Path, lab: str, down: str
) -> None:
    inv = site(tmp_path, lab)
    found = pointers.build(inv, endpoints(inv / "credentials"))
    text = pointers.render(found)
    assert found.lab == lab
    # Even the lab's throwaway password stays in its file: terminal output ends up in logs.
    assert "s3cret-password-value" not in text and "s3cret" not in repr(found.as_dict())
    shown = rf"^admin password +cat {lab}/credentials/open_webui_admin_password "
    assert re.search(shown, text, re.MULTILINE)
    assert "s3cret-api-key-value" not in text  # the API key: only where it is
    assert found.tunnel is not None and found.tunnel.startswith("ssh -N -L 8443:10.0.0.20:443 ")
    assert found.next_commands[-1] == down
    assert f"(user prometheus, password cat {lab}/credentials/prometheus_web_password)" in text
    assert text.splitlines()[-1] == "-" * 74  # the block closes the output


def test_status_prints_the_same_block_from_its_json(tmp_path: Path) -> None:
    inv = site(tmp_path, "lab-y")
    found = pointers.build(inv, endpoints(inv / "credentials"))
    again = pointers.Pointers.from_dict(found.as_dict())
    assert pointers.render(again) == pointers.render(found)
