"""The host image recipe: its hash is the cache key, so it must be stable and sensitive to content."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from r1deploy.lab.image import IMAGE_REPO, Recipe, debian_mirror
from r1deploy.lab.mirrors import acng_config, security_mirror, urls
from r1deploy.lab.wheelhouse import wheelhouse_key

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_recipe_hash_is_stable_and_names_the_tag() -> None:
    assert Recipe().digest() == Recipe().digest()
    assert Recipe().tag() == f"{IMAGE_REPO}:{Recipe().digest()}"
    assert len(Recipe().digest()) == 16


def test_any_change_to_the_recipe_changes_the_tag() -> None:
    base = Recipe()
    variants = [
        dataclasses.replace(base, packages=(*base.packages, "curl")),
        dataclasses.replace(base, script=base.script + "true\n"),
        dataclasses.replace(base, masked=base.masked[1:]),
        dataclasses.replace(base, files={**base.files, "etc/motd": "hi\n"}),
        dataclasses.replace(base, dockerfile_tail=(*base.dockerfile_tail, "ENV X=1")),
        dataclasses.replace(base, suite="trixie"),
    ]
    tags = {v.tag() for v in variants}
    assert base.tag() not in tags
    assert len(tags) == len(variants)


def test_image_boots_systemd_and_stops_it_cleanly() -> None:
    tail = Recipe().dockerfile_tail
    assert 'CMD ["/lib/systemd/systemd"]' in tail
    assert "STOPSIGNAL SIGRTMIN+3" in tail
    # Host keys are made per container at first boot, never shipped in the image.
    assert "rm -f /etc/ssh/ssh_host_*" in Recipe().script
    assert ": > /etc/machine-id" in Recipe().script


def test_mirror_comes_from_the_machines_deb822_sources(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(DEB822)
    assert debian_mirror((sources,)) == "http://mirror.example/debian"
    assert security_mirror((sources,)) == "http://mirror.example/debian-security"


def test_mirror_from_a_one_line_sources_list(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text("# comment\ndeb [arch=amd64] http://ftp.example/debian/ bookworm main\n")
    assert debian_mirror((tmp_path / "missing", sources)) == "http://ftp.example/debian"


def test_mirror_falls_back_to_deb_debian_org(tmp_path: Path) -> None:
    assert debian_mirror((tmp_path / "missing",)) == "http://deb.debian.org/debian"


def test_apt_cacher_binds_only_the_gateway_and_passes_through_to_the_machines_mirror(tmp_path: Path) -> None:
    conf = acng_config(
        "172.30.0.1", tmp_path, tmp_path / "cache", "http://mirror.example/debian", "http://sec.example/ds"
    )
    lines = conf.splitlines()
    assert "BindAddress: 172.30.0.1" in lines
    assert not any(line.startswith("BindAddress:") and "0.0.0.0" in line for line in lines)
    assert "Remap-debrep: deb.debian.org/debian ; http://mirror.example/debian/" in lines
    assert any(line.startswith("Remap-secdeb: deb.debian.org/debian-security") for line in lines)
    assert urls("172.30.0.1").apt == "http://172.30.0.1:3142/deb.debian.org/debian"


def test_wheelhouse_key_follows_the_locks_content(tmp_path: Path) -> None:
    a, b = tmp_path / "requirements-cpu.txt", tmp_path / "requirements.txt"
    a.write_text("torch==2.13.0+cpu\n")
    b.write_text("open-webui==0.12.4\n")
    first = wheelhouse_key([a, b])
    assert wheelhouse_key([a, b]) == first
    b.write_text("open-webui==0.12.5\n")
    assert wheelhouse_key([a, b]) != first
    assert wheelhouse_key([a, b], python_tag="cp312") != wheelhouse_key([a, b], python_tag="cp311")
