"""Scrub and pack the folder `playbooks/diagnose.yml` collected into one archive with no secret in it.

Secrets removed: every value in the inventory's credentials folder (the generated API key, Open WebUI's
secret key and admin password), any extra value the playbook passes in a 0600 file (vault overrides),
and known key/token patterns (``Authorization: Bearer``, ``*_API_KEY=``, ``password=``, ``hf_...``,
``sk-...``, PEM private keys). The packed archive is checked again for every known value; a hit is an
error and no archive is left behind.

    python -m r1deploy.diagnose pack --credentials DIR [--extra-secrets FILE] --out ARCHIVE FOLDER
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# A generated value shorter than this is not treated as a secret (it would redact ordinary words).
MIN_SECRET_LENGTH = 8
REDACTED = "[REDACTED]"

PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
        "-----PRIVATE KEY " + REDACTED + "-----",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + REDACTED),
    (
        re.compile(
            # A key name (HF_TOKEN, x-api-key, password...), not a word that merely ends so (tiktoken==1.0).
            r"(?i)\b((?:[A-Z0-9]+[_.-])*(?:api[_-]?key|secret[_-]?key|secret|token|passw(?:or)?d|passphrase)"
            r"[\"']?\s*(?:=(?!=)|:)\s*[\"']?)([^\s\"',;}{=]{4,})"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "hf_" + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "sk-" + REDACTED),
)


@dataclass
class ScrubReport:
    files: int = 0
    files_changed: int = 0
    values_redacted: int = 0
    patterns_redacted: int = 0
    leaks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "files_changed": self.files_changed,
            "values_redacted": self.values_redacted,
            "patterns_redacted": self.patterns_redacted,
            "leaks": self.leaks,
        }


def _values_of(text: str) -> list[str]:
    """A credentials file holds the value, maybe followed by `` salt=...`` (Ansible's password lookup)."""
    values: list[str] = []
    for line in text.splitlines():
        for part in re.split(r"\s+salt=|\s+ident=", line.strip()):
            if len(part) >= MIN_SECRET_LENGTH:
                values.append(part)
    return values


def load_secrets(credentials: Path | None, extra: Path | None = None) -> dict[str, str]:
    """{value: name} for every secret in the credentials folder and the extra file (one value a line)."""
    secrets: dict[str, str] = {}
    if credentials is not None and credentials.is_dir():
        for path in sorted(credentials.rglob("*")):
            if path.is_file():
                for value in _values_of(path.read_text(errors="replace")):
                    secrets[value] = path.name
    if extra is not None and extra.is_file():
        for value in _values_of(extra.read_text(errors="replace")):
            secrets.setdefault(value, "extra")
    return secrets


def scrub_text(text: str, secrets: dict[str, str]) -> tuple[str, int, int]:
    """Return the text without any secret value or key/token pattern, and the two counts."""
    values = 0
    # Longest first: a value that contains another is removed whole.
    for value in sorted(secrets, key=len, reverse=True):
        if value in text:
            values += text.count(value)
            text = text.replace(value, f"[REDACTED:{secrets[value]}]")
    patterns = 0
    for pattern, replacement in PATTERNS:
        text, count = pattern.subn(replacement, text)
        patterns += count
    return text, values, patterns


def _files(root: Path) -> Iterable[Path]:
    return (p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def scrub_tree(root: Path, secrets: dict[str, str]) -> ScrubReport:
    report = ScrubReport()
    for path in _files(root):
        report.files += 1
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="surrogateescape")
        clean, values, patterns = scrub_text(text, secrets)
        if clean != text:
            path.write_bytes(clean.encode("utf-8", errors="surrogateescape"))
            report.files_changed += 1
        report.values_redacted += values
        report.patterns_redacted += patterns
    return report


def find_leaks(root: Path, secrets: dict[str, str]) -> list[str]:
    """``path: name`` for every file under root that still holds a known secret value."""
    leaks = []
    encoded = {value.encode(): name for value, name in secrets.items()}
    for path in _files(root):
        raw = path.read_bytes()
        leaks += [f"{path.relative_to(root)}: {name}" for value, name in encoded.items() if value in raw]
    return leaks


def pack(folder: Path, out: Path, secrets: dict[str, str]) -> ScrubReport:
    """Scrub the folder, refuse if a secret survived, write ``out`` (tar.gz, 0600)."""
    report = scrub_tree(folder, secrets)
    report.leaks = find_leaks(folder, secrets)
    if report.leaks:
        return report
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as tar:
        tar.add(folder, arcname=out.name.removesuffix(".tar.gz"))
    return report


def archive_leaks(archive: Path, secrets: dict[str, str]) -> list[str]:
    """Every member of a packed archive that holds a known secret value (the test and the playbook check)."""
    leaks = []
    encoded = {value.encode(): name for value, name in secrets.items()}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            raw = handle.read()
            leaks += [f"{member.name}: {name}" for value, name in encoded.items() if value in raw]
    return leaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1deploy.diagnose")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="scrub FOLDER and pack it into --out")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--credentials", type=Path)
    p.add_argument("--extra-secrets", type=Path, help="a file of further secret values, one a line")
    args = parser.parse_args(argv)
    secrets = load_secrets(args.credentials, args.extra_secrets)
    report = pack(args.folder, args.out, secrets)
    if not report.leaks:
        report.leaks = archive_leaks(args.out, secrets)
        if report.leaks:
            args.out.unlink()
    doc = {"ok": not report.leaks, "archive": str(args.out), "secrets_known": len(secrets)}
    doc.update(report.as_dict())
    print(json.dumps(doc))
    if report.leaks:
        print(f"secrets survived scrubbing, no archive written: {report.leaks}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
