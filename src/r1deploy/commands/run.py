"""``r1deploy run PLAYBOOK -i INVENTORY``: any playbook through the CLI's runner path.

Also home of the options and the handler shared by ``deploy``, ``check`` and ``teardown``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from r1deploy.events import EXIT_BAD_INPUT
from r1deploy.progress import make_view
from r1deploy.runner import BadInput, RunRequest, execute, resolve_inventory, resolve_playbook
from r1deploy.runs import SUMMARY


def add_json_option(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """``--json``; ``suppress`` for a sub-subcommand, so ``runs --json show ID`` keeps the parent's value."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print one machine-readable JSON object on stdout (progress goes to stderr)",
    )


def add_inventory_option(parser: argparse.ArgumentParser, required: bool = True) -> None:
    default = os.environ.get("R1DEPLOY_INVENTORY")
    parser.add_argument(
        "-i",
        "--inventory",
        required=required and default is None,
        default=default,
        help="inventory file or folder (default: $R1DEPLOY_INVENTORY)",
    )


def add_playbook_options(parser: argparse.ArgumentParser, *, targeting: bool = True) -> None:
    add_inventory_option(parser)
    if targeting:
        parser.add_argument("-l", "--limit", help="limit to hosts/groups (ansible-playbook --limit)")
        parser.add_argument("-t", "--tags", help="only tasks with these tags (comma-separated)")
        parser.add_argument("--skip-tags", help="skip tasks with these tags (comma-separated)")
        parser.add_argument("-C", "--check", action="store_true", help="dry run (ansible-playbook --check)")
        parser.add_argument(
            "-D", "--diff", action="store_true", help="show file changes (ansible-playbook --diff)"
        )
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="@FILE",
        help="variables from a YAML/JSON file, as @FILE (repeatable). Inline values are refused: they would "
        "show in the process list and the run folder",
    )
    parser.add_argument(
        "--vault-id", action="append", default=[], help="passed to ansible-playbook (LABEL@FILE)"
    )
    parser.add_argument(
        "--vault-password-file", action="append", default=[], help="passed to ansible-playbook (a file path)"
    )
    parser.add_argument("-f", "--forks", type=int, help="parallel hosts (default from ansible.cfg)")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more Ansible output in the run folder"
    )
    parser.add_argument("--plain", action="store_true", help="plain line output even on a terminal")
    add_json_option(parser)


def extra_var_files(values: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for value in values:
        if not value.startswith("@"):
            raise BadInput(
                f"-e {value!r}: pass variables in a file (-e @vars.yml); inline values would be visible in "
                "the process list and recorded in the run folder"
            )
        path = Path(value[1:]).expanduser()
        if not path.is_file():
            raise BadInput(f"extra-vars file not found: {path}")
        files.append(path.resolve())
    return files


def request_from_args(
    args: argparse.Namespace,
    command: str,
    playbooks: Sequence[str],
    extravars: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
) -> RunRequest:
    if not args.inventory:
        raise BadInput("no inventory: pass -i INVENTORY or set R1DEPLOY_INVENTORY")
    return RunRequest(
        command=command,
        playbooks=[resolve_playbook(p) for p in playbooks],
        inventory=resolve_inventory(args.inventory),
        limit=getattr(args, "limit", None),
        tags=getattr(args, "tags", None),
        skip_tags=getattr(args, "skip_tags", None),
        check=bool(getattr(args, "check", False)),
        diff=bool(getattr(args, "diff", False)),
        extra_var_files=extra_var_files(getattr(args, "extra_vars", [])),
        extravars=dict(extravars or {}),
        vault_ids=list(getattr(args, "vault_id", [])),
        vault_password_files=list(getattr(args, "vault_password_file", [])),
        forks=getattr(args, "forks", None),
        verbosity=int(getattr(args, "verbose", 0) or 0),
        argv=list(argv if argv is not None else getattr(args, "argv", sys.argv[1:])),
    )


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def refuse(args: argparse.Namespace, command: str, message: str) -> int:
    """Bad input: exit 2, with the reason on stderr (and as JSON with ``--json``)."""
    print(f"r1deploy {command}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json(
            {
                "ok": False,
                "command": command,
                "status": "refused",
                "exit_code": EXIT_BAD_INPUT,
                "errors": [message],
            }
        )
    return EXIT_BAD_INPUT


# After a successful run: (text for the terminal, data for --json) or None; see r1deploy.pointers.
Closing = Callable[[RunRequest], "tuple[str, dict[str, Any]] | None"]


def run_playbooks(
    args: argparse.Namespace,
    command: str,
    playbooks: Sequence[str],
    extravars: dict[str, Any] | None = None,
    closing: Closing | None = None,
) -> int:
    """Shared handler: build the request, run it with the right view, print JSON if asked.

    ``closing`` runs after a successful run (exit 0): its text is the run's last block on stdout
    (``deploy``: how to sign in, next commands), its data the JSON summary's ``pointers``.
    """
    try:
        request = request_from_args(args, command, playbooks, extravars)
        view = make_view(json_mode=args.json) if not getattr(args, "plain", False) else None
        if view is None:
            from r1deploy.progress import PlainView

            view = PlainView(sys.stderr if args.json else sys.stdout)
        result = execute(request, view)
    except BadInput as exc:
        return refuse(args, command, str(exc))
    closed = closing(request) if closing is not None and result.exit_code == 0 else None
    summary = result.summary
    if closed:
        summary = {**summary, "pointers": closed[1]}
        if result.run is not None:  # `runs show` replays exactly what was printed
            result.run.write_json(SUMMARY, summary)
    if args.json:
        print_json(summary)
    elif closed:
        print(closed[0], flush=True)
    return result.exit_code


def _handle(args: argparse.Namespace) -> int:
    return run_playbooks(args, "run", args.playbook)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run any playbook through the CLI (progress, run folder, JSON, exit codes)",
        description="Run playbooks (a path, or a name under playbooks/) with the CLI's progress view, run "
        "folder and exit codes. Several playbooks run in one ansible-playbook invocation.",
    )
    parser.add_argument("playbook", nargs="+", help="playbook path or name (e.g. nccl_check)")
    add_playbook_options(parser)
    parser.set_defaults(func=_handle)
