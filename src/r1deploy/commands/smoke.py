"""``r1deploy smoke -i INVENTORY``: one real chat completion directly and through nginx, with timings."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from r1deploy.commands.run import add_inventory_option, add_json_option, print_json, refuse
from r1deploy.events import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from r1deploy.runner import BadInput, resolve_inventory

if TYPE_CHECKING:
    import ssl


def _context(args: argparse.Namespace, pem: str) -> ssl.SSLContext:
    import ssl

    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if args.cafile:
        return ssl.create_default_context(cafile=args.cafile)
    if pem:
        # Exactly the certificate nginx serves, read from the frontend over Ansible's SSH channel.
        return ssl.create_default_context(cadata=pem)
    return ssl.create_default_context()


def _seconds(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else "-"


def render(doc: dict[str, Any], console: Console) -> None:
    console.print(Text.assemble(("smoke test ", "bold"), f"{doc['model']!r}, prompt {doc['prompt']!r}"))
    for name, probe in doc["probes"].items():
        verdict = Text("ok", "bold green") if probe["ok"] else Text(f"FAILED: {probe['error']}", "bold red")
        timings = f"first token {_seconds(probe['ttft_s'])}, total {_seconds(probe['total_s'])}"
        if probe["signin_s"] is not None:
            timings = f"sign-in {_seconds(probe['signin_s'])}, " + timings
        tokens = f", {probe['output_tokens']} tokens" if probe["output_tokens"] else ""
        console.print(
            Text.assemble((f"{name:<9}", "bold"), verdict, f"  {timings}{tokens}  ", (probe["url"], "dim"))
        )
        if probe["reasoning"]:
            console.print(Text(f"          reasoning: {probe['reasoning'][:200]}", style="dim"))
        if probe["answer"]:
            console.print(Text(f"          answer:    {probe['answer'][:200]}"))
    if doc.get("chat_url"):
        console.print(Text.assemble(("chat page: ", "bold"), (doc["chat_url"], "bold cyan")))


def _handle(args: argparse.Namespace) -> int:
    from r1deploy.smoke import run_smoke
    from r1deploy.status import StatusError, endpoints

    try:
        inventory = resolve_inventory(args.inventory)
        ep = endpoints(inventory, fetch_cert=not (args.insecure or args.cafile))
    except (BadInput, StatusError) as exc:
        return refuse(args, "smoke", str(exc))
    try:
        doc = run_smoke(
            ep,
            email=ep.webui_admin_email,
            nginx_v1=ep.nginx_vllm_route,
            context=_context(args, ep.tls_cert_pem),
            max_tokens=args.max_tokens,
            timeout=args.timeout,
        )
    except FileNotFoundError as exc:
        return refuse(args, "smoke", str(exc))
    reached = [p for p in doc["probes"].values() if p["status"] is not None]
    code = EXIT_OK if doc["ok"] else (EXIT_FAILED if reached else EXIT_UNREACHABLE)
    doc["exit_code"] = code
    doc["endpoints"] = ep.as_dict()
    if args.json:
        print_json(doc)
    else:
        render(doc, Console())
    if not doc["ok"] and not args.json:
        print("smoke test FAILED", file=sys.stderr)
    return code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "smoke",
        help="one real chat completion directly against vLLM and through nginx (Open WebUI), timed",
        description="Direct: vLLM's /v1/chat/completions with the API key. Through nginx: sign in to Open "
        "WebUI as the admin and stream /api/chat/completions, as the chat page does; also /v1/ through nginx "
        "when that route is enabled. TLS is verified against the certificate nginx serves (read from the "
        "frontend), unless --cafile or --insecure. Exit 0 ok, 1 a wrong/failed answer, 3 nothing reachable.",
    )
    add_inventory_option(parser)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--cafile", help="CA bundle to verify the chat page's certificate")
    parser.add_argument("--insecure", action="store_true", help="do not verify the chat page's certificate")
    add_json_option(parser)
    parser.set_defaults(func=_handle)
