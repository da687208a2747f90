"""The Prometheus route's htpasswd line (r1deploy.htpasswd): nginx's {SSHA} format, stable across runs."""

import base64
import hashlib

import pytest

from r1deploy.htpasswd import ssha_line, ssha_matches


def test_the_line_is_nginx_ssha_and_checks_like_nginx() -> None:
    line = ssha_line("prometheus", "s3cret-password", "frontend1")
    user, hashed = line.split(":", 1)
    assert user == "prometheus" and hashed.startswith("{SSHA}")
    raw = base64.b64decode(hashed[6:])
    digest, salt = raw[:20], raw[20:]
    assert len(salt) == 8 and hashlib.sha1(b"s3cret-password" + salt).digest() == digest
    assert ssha_matches(line, "prometheus", "s3cret-password")
    assert not ssha_matches(line, "prometheus", "wrong")
    assert not ssha_matches(line, "admin", "s3cret-password")
    assert "s3cret-password" not in line


def test_a_rerun_writes_the_same_line_and_sites_differ() -> None:
    assert ssha_line("prometheus", "pw", "a") == ssha_line("prometheus", "pw", "a")
    assert ssha_line("prometheus", "pw", "a") != ssha_line("prometheus", "pw", "b")


@pytest.mark.parametrize(("user", "password"), [("", "pw"), ("a:b", "pw"), ("prometheus", "")])
def test_bad_input_is_refused(user: str, password: str) -> None:
    with pytest.raises(ValueError):
        ssha_line(user, password)
