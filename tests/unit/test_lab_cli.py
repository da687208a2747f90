"""`r1deploy lab` argument handling: bad input is refused with exit code 2 before anything runs."""

from __future__ import annotations

import pytest

from r1deploy import cli
from r1deploy.commands import lab as lab_command
from r1deploy.lab.model import Host, LabInfo, Network


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lab", "up", "--name", "mylab"], "invalid lab name 'mylab'"),
        (["lab", "down", "--name", "Lab"], "invalid lab name 'Lab'"),
        (["lab", "up", "--workers", "-1"], "--workers must be between 0 and 16"),
    ],
)
def test_bad_input_exits_2_and_names_the_fix(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("R1DEPLOY_LAB_NAME", raising=False)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err


def test_env_name_is_validated_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("R1DEPLOY_LAB_NAME", "prod")
    assert cli.main(["lab", "status"]) == 2
    assert "start with 'lab'" in capsys.readouterr().err


def test_lab_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["lab"])
    assert exc.value.code == 2


def test_status_table_lists_hosts_addresses_and_mirrors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    info = LabInfo(
        name="lab",
        root=tmp_path,
        inventory_dir=tmp_path / "inventories/lab",
        hosts=[
            Host("lab-head", "ray_head", "10.9.0.2"),
            Host("lab-frontend", "frontend", "10.9.0.3", "10.8.0.2"),
        ],
        cluster=Network("lab-cluster", "10.9.0.0/16", "10.9.0.1", "br-1"),
        public=None,
        image="img:1",
        ssh_key=tmp_path / "k",
        known_hosts=tmp_path / "kh",
        apt_mirror_url="http://10.9.0.1:3142/deb.debian.org/debian",
        apt_security_mirror_url="http://10.9.0.1:3142/deb.debian.org/debian-security",
        pip_find_links="http://10.9.0.1:3143/",
        mirrors_running={"apt": True, "pip": False},
    )
    text = lab_command.render(info)
    assert "lab-frontend  frontend  10.9.0.3    10.8.0.2" in text
    assert "http://10.9.0.1:3142/deb.debian.org/debian  (running)" in text
    assert "http://10.9.0.1:3143/  (STOPPED)" in text


def test_make_test_and_make_demo_never_share_a_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's two commands run in either order: `make demo` (and `make lab-down`) use the CLI's
    default lab, the lab tier its own; neither brings up, reuses or removes the other's lab."""
    import re
    from pathlib import Path

    from r1deploy.lab.paths import DEFAULT_NAME, default_name
    from tests.lab.conftest import TEST_LAB_NAME, session_lab_name

    monkeypatch.delenv("R1DEPLOY_LAB_NAME", raising=False)
    assert default_name() == DEFAULT_NAME == "lab"
    assert session_lab_name() == TEST_LAB_NAME != DEFAULT_NAME
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    for target in ("demo", "lab-down", "test"):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        assert recipe, target
        assert "--name" not in recipe.group(1) and "R1DEPLOY_LAB_NAME" not in recipe.group(1), recipe.group(1)


def test_fact_cache_files_of_a_host_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from r1deploy.lab.lab import fact_cache_files

    for name in (
        "s1_lab-head",
        "lab-head",
        "s1_lab-head2",
        "s1_lab-test-head",
        "s2_lab-head",
        "xs1_lab-head",
    ):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in fact_cache_files(tmp_path, "lab-head")] == [
        "lab-head",
        "s1_lab-head",
        "s2_lab-head",
    ]
