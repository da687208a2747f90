"""What the CLI reads from an inventory before it runs anything.

- :func:`check_files`: every YAML file Ansible would read (the inventory file, or a folder's files and
  its ``group_vars``/``host_vars``) parses. A broken one is bad input (exit 2) naming the file and the
  parser's message; Ansible itself would only warn and run on fewer hosts, or none (ansible.cfg makes
  ``ansible-playbook`` fail too: ``[inventory] unparsed_is_failed``).
- :func:`play_keyword_vars`: inventory variables that feed a play keyword. Ansible templates play
  keywords such as ``serial`` before any inventory variable exists, so ``r1deploy_gpu_reboot_batch``
  set in ``group_vars`` would be ignored; the CLI reads it here and passes it as an extra variable
  (before the operator's own ``-e`` files, which still win).
  ``ansible-playbook`` without it is refused by preflight stage 1 (roles/preflight/tasks/inventory.yml).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from r1deploy.runner import BadInput

# Mirrors ansible.cfg's [inventory] ignore_patterns and Ansible's default ignored extensions.
IGNORED_NAMES = ("credentials", "artifacts")
IGNORED_SUFFIXES = (
    ".pyc",
    ".pyo",
    ".swp",
    ".bak",
    "~",
    ".rpm",
    ".md",
    ".txt",
    ".rst",
    ".orig",
    ".cfg",
    ".retry",
)
YAML_SUFFIXES = (".yml", ".yaml", ".json")
VARS_DIRS = ("group_vars", "host_vars")
# Inventory variables that Ansible only honours as extra variables (they feed a play keyword).
PLAY_KEYWORD_VARS = ("r1deploy_gpu_reboot_batch",)


class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that accepts Ansible's tags (``!vault``, ``!unsafe``): only the syntax is checked."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
    del loader, suffix, node


_TolerantLoader.add_multi_constructor("!", _any_tag)


def _ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name in IGNORED_NAMES or path.name.endswith(IGNORED_SUFFIXES)


def _vars_files(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _ignored(Path(d)))
        for name in sorted(files):
            path = Path(root) / name
            if not _ignored(path) and path.suffix in YAML_SUFFIXES:
                yield path


def inventory_yaml_files(inventory: Path) -> list[Path]:
    """The YAML files Ansible reads for this inventory (host sources and their variable files)."""
    if inventory.is_file():
        sources = [inventory]
        base = inventory.parent
    else:
        sources = [
            p
            for p in sorted(inventory.iterdir())
            if p.is_file() and not _ignored(p) and p.suffix in YAML_SUFFIXES
        ]
        base = inventory
    files = list(sources)
    for vars_dir in VARS_DIRS:
        if (base / vars_dir).is_dir():
            files += list(_vars_files(base / vars_dir))
    return files


def load(path: Path) -> tuple[Any, str | None]:
    """The parsed document, or the parser's message for a file that is not valid YAML.

    Ansible's tags (``!vault``) load as None and a vault-encrypted file as None: only syntax is judged.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read it: {exc}"
    if text.lstrip().startswith("$ANSIBLE_VAULT"):
        return None, None
    try:
        return yaml.load(text, Loader=_TolerantLoader), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        words = " ".join(str(w) for w in (exc.context, exc.problem) if w)
        return None, f"{where}{words or exc}"
    except yaml.YAMLError as exc:
        return None, " ".join(str(exc).split())


def check_files(inventory: Path) -> None:
    """Raise :class:`BadInput` naming every inventory file that does not parse, with the parser's words."""
    problems = [
        f"{path}: {problem}" for path in inventory_yaml_files(inventory) if (problem := load(path)[1])
    ]
    if problems:
        raise BadInput(
            "the inventory does not parse (Ansible would skip it and run on fewer hosts): "
            + "; ".join(problems)
            + ". Fix the file(s) and run again."
        )


def _as_keyword_value(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().rstrip("%").isdigit():
        return value.strip()
    return None  # a template or a bad value: preflight stage 1 judges it


def _definitions(doc: Any, name: str) -> Iterator[Any]:
    """Every value of ``name`` in a parsed inventory or vars document, at any depth (hosts, groups)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == name:
                yield value
            else:
                yield from _definitions(value, name)
    elif isinstance(doc, list):
        for item in doc:
            yield from _definitions(item, name)


def play_keyword_vars(inventory: Path) -> dict[str, Any]:
    """Inventory values of :data:`PLAY_KEYWORD_VARS` when the inventory gives each one value.

    A plain read of the inventory's YAML files (hosts, ``group_vars``, ``host_vars``): milliseconds. Where
    the files give several values (an override), Ansible's own inventory and variable managers resolve
    them for the ``gpu_nodes`` hosts. Anything else (hosts that still disagree, a template, an
    encrypted file) passes nothing, and preflight stage 1 refuses the run with the reason and the fix.
    """
    found: dict[str, Any] = {}
    docs = [load(path)[0] for path in inventory_yaml_files(inventory)]
    for name in PLAY_KEYWORD_VARS:
        values = {repr(v): v for doc in docs for v in _definitions(doc, name)}
        if len(values) > 1:  # overrides: let Ansible's own precedence decide (about a second)
            values = {repr(v): v for v in _ansible_values(inventory, name)}
        if len(values) == 1:
            value = _as_keyword_value(next(iter(values.values())))
            if value is not None:
                found[name] = value
    return found


def _ansible_values(inventory: Path, name: str, group: str = "gpu_nodes") -> list[Any]:
    """``name`` as Ansible resolves it for each host of ``group`` (inventory variables only)."""
    os.environ.setdefault("ANSIBLE_CONFIG", str(Path(__file__).resolve().parents[2] / "ansible.cfg"))
    try:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager

        loader = DataLoader()
        hosts = InventoryManager(loader=loader, sources=[str(inventory)])
        variables = VariableManager(loader=loader, inventory=hosts)
        return [variables.get_vars(host=h, include_hostvars=False).get(name) for h in hosts.get_hosts(group)]
    except Exception:  # vault without a password, ...: preflight refuses what is unread
        return []
