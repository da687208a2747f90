"""Read systemd units and EnvironmentFiles the way systemd does, for the parts r1deploy's units use.

Standard library only (runs with any python3 >= 3.8 on a GPU host). Covered: sections, repeated keys,
``\\`` line continuation, ``#``/``;`` comment lines, ``EnvironmentFile=-`` (optional), the ``-@+!:``
prefixes of ``Exec*=``, shell-like quoting of command lines, and ``KEY=VALUE`` environment files
with quotes. Not covered (and reported by :func:`lint_command`): specifiers (``%n`` ...) and
``$VAR`` expansion.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

Unit = dict[str, dict[str, list[str]]]


class CommandError(ValueError):
    """An Exec*= line that systemd would refuse to parse."""


def parse_unit(text: str) -> Unit:
    """{section: {key: [values in order]}}."""
    unit: Unit = {}
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not pending and (not stripped or stripped[0] in "#;"):
            continue
        if pending and stripped and stripped[0] in "#;":
            # systemd ignores comment lines inside a continued value
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            unit.setdefault(section, {})
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            continue
        unit.setdefault(section, {}).setdefault(key.strip(), []).append(value.strip())
    if pending:
        key, _, value = pending.strip().partition("=")
        unit.setdefault(section, {}).setdefault(key.strip(), []).append(value.strip())
    return unit


def read_unit(path: Path) -> Unit:
    return parse_unit(Path(path).read_text(encoding="utf-8"))


def service(unit: Unit, key: str) -> list[str]:
    return unit.get("Service", {}).get(key, [])


def split_command(value: str) -> tuple[str, list[str]]:
    """``Exec*=`` value -> (prefixes, argv)."""
    m = re.match(r"^([-@+!:]*)(.*)$", value.strip(), re.S)
    prefixes, rest = (m.group(1), m.group(2)) if m else ("", value)
    try:
        return prefixes, shlex.split(rest, comments=False, posix=True)
    except ValueError as exc:  # systemd also rejects the line ("Unbalanced quoting") and the unit
        raise CommandError(f"{exc} in {rest[-160:]!r}") from exc


def lint_command(argv: list[str]) -> list[str]:
    """Signs that a rendered command line is not what its template meant."""
    problems = []
    for i, tok in enumerate(argv):
        if "#" in tok and i > 0:
            problems.append(f"argument {i} {tok!r} holds '#': comment text ran into the command line")
        if "`" in tok:
            problems.append(f"argument {i} {tok!r} holds a backtick")
        if "%" in tok:
            problems.append(f"argument {i} {tok!r} holds '%': a systemd specifier would be expanded")
        if tok.startswith("$"):
            problems.append(f"argument {i} {tok!r}: systemd would expand this variable")
    if argv and not argv[0].startswith("/"):
        problems.append(f"{argv[0]!r} is not an absolute path")
    return problems


def parse_env_file(text: str) -> dict[str, str]:
    """systemd EnvironmentFile: KEY=VALUE lines, ``#``/``;`` comments, optional quotes."""
    env: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip("\n")
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line = (pending + line).strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def env_assignments(values: list[str]) -> dict[str, str]:
    """``Environment=`` values (each may hold several quoted KEY=VALUE words)."""
    env: dict[str, str] = {}
    for value in values:
        for word in shlex.split(value):
            key, sep, val = word.partition("=")
            if sep:
                env[key] = val
    return env
