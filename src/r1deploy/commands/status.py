"""``r1deploy status -i INVENTORY``: GPUs, driver and units per host; Ray; vLLM; the chat page URL."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from r1deploy import pointers
from r1deploy.commands.run import add_inventory_option, add_json_option, print_json, refuse
from r1deploy.progress import PlainView, QuietView, View
from r1deploy.runner import BadInput, resolve_inventory
from r1deploy.status import gather


def _units_text(units: dict[str, Any]) -> Text:
    text = Text()
    for i, (unit, info) in enumerate(sorted(units.items())):
        if i:
            text.append("  ")
        text.append(unit.removesuffix(".service") + " ", style="")
        state = info["state"] if info["loaded"] else "not installed"
        text.append(state, style="green" if info["active"] else "bold red")
    return text


def render(doc: dict[str, Any], console: Console) -> None:
    table = Table(title="hosts", title_justify="left")
    for column in ("host", "GPUs", "driver", "units"):
        table.add_column(column)
    for name, info in doc["hosts"].items():
        if not info.get("gathered"):
            table.add_row(
                name, "", "", Text("unreachable" if not info["reachable"] else "not gathered", "bold red")
            )
            continue
        gpus = info["gpus"]
        if gpus:
            names = sorted({g["name"] for g in gpus})
            gpu_text = f"{len(gpus)} x {', '.join(names)}"
        else:
            gpu_text = f"{info['gpu_count']} ({info['gpu_source']})"
        table.add_row(name, gpu_text, info["driver"] or "-", _units_text(info["units"]))
    console.print(table)
    cluster = doc.get("cluster") or {}
    ray = cluster.get("ray") or {}
    if ray and not ray.get("ok"):
        console.print(
            Text.assemble(("ray    ", "bold"), ("`ray status` failed", "bold red"), f": {ray['error']}")
        )
    elif ray:
        style = "green" if ray.get("ok") else "bold red"
        console.print(
            Text.assemble(
                ("ray    ", "bold"),
                (f"{ray.get('nodes_active', 0)} nodes active", style),
                f", {ray.get('nodes_pending', 0)} pending; "
                f"GPUs {ray.get('gpus_used', 0):g}/{ray.get('gpus_total', 0):g}"
                f" used, CPUs {ray.get('cpus_total', 0):g}",
            )
        )
    vllm = cluster.get("vllm") or {}
    if vllm:
        state = "healthy" if vllm["healthy"] else f"NOT healthy ({vllm['health_error']})"
        served = "served" if vllm["model_served"] else "NOT served"
        console.print(
            Text.assemble(
                ("vllm   ", "bold"),
                (state, "green" if vllm["healthy"] else "bold red"),
                f" at {vllm['url']}; model {vllm['served_model']!r} ",
                (served, "green" if vllm["model_served"] else "bold red"),
                f" (max_model_len {vllm['max_model_len']})" if vllm.get("max_model_len") else "",
            )
        )
        serving = vllm.get("serving") or {}
        if serving.get("metrics"):
            rate = serving.get("tokens_per_s_1m")
            console.print(
                Text.assemble(
                    ("serving", "bold"),
                    f" {serving['running']} running, {serving['waiting']} waiting; "
                    f"KV cache {serving['kv_cache_usage_pct']} % used; ",
                    f"{rate:g} tokens/s over the last minute (Prometheus)"
                    if rate is not None
                    else f"{serving['generation_tokens_total']} tokens generated (no Prometheus for a rate)",
                )
            )
    if doc.get("chat_url"):
        ok = all(f["ok"] for f in doc.get("frontend", {}).values()) if doc.get("frontend") else None
        console.print(
            Text.assemble(
                ("chat   ", "bold"),
                (doc["chat_url"], "bold cyan"),
                (
                    "  (answering)" if ok else "  (NOT answering)" if ok is False else "",
                    "green" if ok else "red",
                ),
            )
        )
    if doc["problems"]:
        console.print(Text("problems:", style="bold red"))
        for problem in doc["problems"]:
            console.print(Text(f"  - {problem}", style="red"))
    else:
        console.print(Text("all units active, Ray and vLLM healthy", style="bold green"))


def _handle(args: argparse.Namespace) -> int:
    try:
        inventory = resolve_inventory(args.inventory)
        view: View = QuietView()
        if args.verbose:
            view = PlainView(sys.stderr)
        doc = gather(inventory, list(getattr(args, "argv", ["status"])), view)
    except BadInput as exc:
        return refuse(args, "status", str(exc))
    if args.json:
        print_json(doc)
    else:
        render(doc, Console())
        if doc.get("pointers"):
            print(pointers.render(pointers.Pointers.from_dict(doc["pointers"])), flush=True)
    return int(doc["exit_code"])


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="per host GPUs, driver and units; Ray nodes and GPUs; vLLM health and model; chat URL",
        description="Gather the stack's state with playbooks/status.yml (read-only). Exit 0 when every unit "
        "is active and vLLM serves the model, 1 when something is down, 3 when a host is unreachable.",
    )
    add_inventory_option(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="show the status playbook's progress")
    add_json_option(parser)
    parser.set_defaults(func=_handle)
