"""``r1deploy reset -i INVENTORY``: remove what r1deploy installed (asks first; model and chats kept)."""

from __future__ import annotations

import argparse
import sys

from r1deploy.commands.run import add_playbook_options, refuse
from r1deploy.day2 import finish, run_day2

RESET_PLAYBOOK = "reset.yml"
CONFIRM_WORD = "reset"


def describe(args: argparse.Namespace) -> str:
    what = "REMOVE r1deploy's units, venvs, configuration, nginx and service users"
    if args.remove_models:
        what += ", the MODEL"
    if args.remove_webui_data:
        what += ", Open WebUI's DATA (users, chats)"
    target = f" on {args.limit}" if args.limit else ""
    return f"This will {what}{target} (inventory {args.inventory})."


def confirmed(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        return False
    answer = input(f"{describe(args)} Type '{CONFIRM_WORD}' to continue: ")
    return answer.strip().lower() == CONFIRM_WORD


def run_reset(
    args: argparse.Namespace, command: str, playbook: str, legacy: dict[str, bool] | None = None
) -> int:
    if not confirmed(args):
        return refuse(
            args, command, f"not confirmed (type '{CONFIRM_WORD}', or pass --yes when not on a terminal)"
        )
    extravars = {
        "r1deploy_reset_confirm": "yes",
        "r1deploy_reset_remove_models": bool(args.remove_models),
        "r1deploy_reset_remove_webui_data": bool(args.remove_webui_data),
        **(legacy or {}),
    }
    code, summary = run_day2(args, command, [playbook], extravars)
    return finish(args, code, summary, {}, [f"{command}: done; `r1deploy deploy` installs the stack again"])


def _handle(args: argparse.Namespace) -> int:
    return run_reset(args, "reset", RESET_PLAYBOOK)


def add_reset_options(parser: argparse.ArgumentParser) -> None:
    add_playbook_options(parser)
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--remove-models", action="store_true", help="also remove the model on the GPU nodes")
    parser.add_argument(
        "--remove-webui-data", action="store_true", help="also remove Open WebUI's data (users, chats), user"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reset",
        help="remove what r1deploy installed: units, venvs, configuration, nginx, users (asks first)",
        description="Run playbooks/reset.yml after a typed confirmation. The model and Open WebUI's data are "
        "kept (a later deploy is quicker and keeps the chats) unless --remove-models / --remove-webui-data. "
        "The NVIDIA driver, CUDA and NCCL packages stay.",
    )
    add_reset_options(parser)
    parser.set_defaults(func=_handle)
