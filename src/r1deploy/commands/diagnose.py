"""``r1deploy diagnose -i INVENTORY``: every host's state in one archive on the controller, no secrets."""

from __future__ import annotations

import argparse
from pathlib import Path

from r1deploy.commands.run import add_playbook_options
from r1deploy.day2 import facts_from_run, finish, run_day2

DIAGNOSE_PLAYBOOK = "diagnose.yml"
ARCHIVE = "r1deploy_diagnose_archive"


def _handle(args: argparse.Namespace) -> int:
    extravars = {"r1deploy_diagnose_dir": str(Path(args.out).expanduser().resolve())} if args.out else {}
    code, summary = run_day2(args, "diagnose", [DIAGNOSE_PLAYBOOK], extravars)
    facts = facts_from_run(summary.get("run_dir"), ARCHIVE)
    lines = [f"archive: {str(facts[ARCHIVE]).strip()}"] if ARCHIVE in facts else []
    return finish(args, code, summary, facts, lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="collect GPUs, driver, dmesg, dkms, Ray, journals, versions, network, units and the plan "
        "into one archive, secrets removed",
        description="Run playbooks/diagnose.yml (read-only on the hosts). The archive (tar.gz, 0600) "
        "lands in --out (default artifacts/diagnose/ of the checkout); every credential value and key/token "
        "pattern "
        "is removed, and the archive is checked for them before it is kept.",
    )
    add_playbook_options(parser)
    parser.add_argument("--out", help="folder for the archive (default artifacts/diagnose)")
    parser.set_defaults(func=_handle)
