"""Scrubbing secrets out of everything the CLI writes or prints.

Two layers. Ansible's ``no_log`` already censors task results in runner events; this module is the
second layer for what no_log cannot know about: the literal values of the secrets this toolkit
generates (``<inventory_dir>/credentials/*``), vault password files, API keys handed to the CLI
through the environment, plus patterns that always carry a secret (``KEY=value`` lines of env
files, ``Authorization: Bearer ...`` headers, dict keys named like a password).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"

# Literal values shorter than this are not scrubbed (they would mangle ordinary words like "true").
MIN_SECRET_LEN = 8

# Environment variables whose values are secrets when set (read, never written).
SECRET_ENV_VARS = ("R1DEPLOY_API_KEY", "OPENAI_API_KEY", "VLLM_API_KEY", "WEBUI_SECRET_KEY")

_SECRET_NAME = r"[A-Za-z0-9_]*(?:API_KEY|APIKEY|SECRET|SECRET_KEY|PASSWORD|PASSWD|TOKEN)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers, in any quoting.
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?\s*(?:bearer|basic|token)\s+)[^\s\"',}]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + REDACTED),
    # KEY=value (env files, shell lines) where KEY names a secret.
    (re.compile(r"(?i)\b(" + _SECRET_NAME + r")=(?!<redacted>)[^\s\"'&;]+"), r"\1=" + REDACTED),
    # --api-key VALUE / --password=VALUE on command lines.
    (re.compile(r"(?i)(--(?:api-key|password|token|secret)[= ])(?!<redacted>)[^\s\"']+"), r"\1" + REDACTED),
)

# Mapping keys whose values are always secret (exact, case-insensitive match of the whole key).
_SECRET_KEY_RE = re.compile(
    r"(?i)^(?:[a-z0-9_-]*[_-])?(?:password|passwd|secret|secret_key|api_key|apikey|token|private_key|"
    r"vault_password|authorization)$"
)


@dataclass
class Scrubber:
    """Replaces known secret values and secret-shaped text with ``<redacted>``."""

    values: set[str] = field(default_factory=set)

    def add(self, value: str | None) -> None:
        if value is None:
            return
        value = value.strip()
        if len(value) >= MIN_SECRET_LEN:
            self.values.add(value)

    def add_file(self, path: Path) -> None:
        """A secret file: its whole content, each line, and the value part of ``KEY=value`` lines."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        self.add(text)
        for line in text.splitlines():
            self.add(line)
            if "=" in line:
                self.add(line.split("=", 1)[1].strip().strip("\"'"))

    def add_directory(self, directory: Path) -> None:
        if not directory.is_dir():
            return
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                self.add_file(path)

    def add_environment(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        for name in SECRET_ENV_VARS:
            self.add(env.get(name))
        vault_file = env.get("ANSIBLE_VAULT_PASSWORD_FILE")
        if vault_file:
            self.add_vault_file(vault_file)

    def add_vault_file(self, spec: str) -> None:
        """``--vault-password-file PATH`` or ``--vault-id LABEL@PATH`` (a plain file, not a script)."""
        path = Path(spec.split("@", 1)[1] if "@" in spec else spec).expanduser()
        if path.is_file() and not os.access(path, os.X_OK):
            self.add_file(path)

    def text(self, text: str) -> str:
        if not text:
            return text
        # Longest first, so a secret that contains another is replaced whole.
        for value in sorted(self.values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def __call__(self, obj: Any) -> Any:
        """Scrub any JSON-like value (str, list, dict, scalars), returning a new value."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            for key, value in obj.items():
                if isinstance(key, str) and _SECRET_KEY_RE.match(key) and value not in (None, "", False):
                    out[key] = REDACTED if isinstance(value, str | int | float) else self(value)
                else:
                    out[self.text(key) if isinstance(key, str) else key] = self(value)
            return out
        if isinstance(obj, list | tuple):
            return [self(item) for item in obj]
        return obj


def scrubber_for(
    inventory: Path | None = None,
    vault_specs: Iterable[str] = (),
    extra_values: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Scrubber:
    """The scrubber for one CLI invocation: credentials next to the inventory, vault files, env keys."""
    scrubber = Scrubber()
    if inventory is not None:
        inventory_dir = inventory if inventory.is_dir() else inventory.parent
        scrubber.add_directory(inventory_dir / "credentials")
    for spec in vault_specs:
        scrubber.add_vault_file(spec)
    for value in extra_values:
        scrubber.add(value)
    scrubber.add_environment(environ)
    return scrubber
