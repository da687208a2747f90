"""An htpasswd line for nginx's basic authentication, made on the controller without passlib.

nginx reads ``{SSHA}base64(sha1(password + salt) + salt)`` (RFC 2307 syntax, nginx >= 1.0.3) with
no system crypt() involved, so one line works on Debian, Ubuntu and EL alike. SHA-1 is enough here:
the password is 32 random characters r1deploy generated, so the hash's strength against guessing
is the password's, not the function's. The salt is derived from the user and the password, so a re-run
writes the same line (no change) while two sites with the same password still get different lines
unless their users match too.
"""

from __future__ import annotations

import base64
import hashlib

SCHEME = "{SSHA}"


def ssha_line(user: str, password: str, site: str = "") -> str:
    """``user:{SSHA}...`` for nginx's auth_basic_user_file."""
    if not user or ":" in user or not password:
        raise ValueError("htpasswd needs a user without ':' and a non-empty password")
    salt = hashlib.sha256(f"r1deploy-htpasswd\0{site}\0{user}\0{password}".encode()).digest()[:8]
    digest = hashlib.sha1(password.encode() + salt).digest()
    return f"{user}:{SCHEME}{base64.b64encode(digest + salt).decode()}"


def ssha_matches(line: str, user: str, password: str) -> bool:
    """Whether an ``{SSHA}`` line accepts this user and password (what nginx checks)."""
    name, _, hashed = line.strip().partition(":")
    if name != user or not hashed.startswith(SCHEME):
        return False
    raw = base64.b64decode(hashed[len(SCHEME) :])
    digest, salt = raw[:20], raw[20:]
    return hashlib.sha1(password.encode() + salt).digest() == digest
