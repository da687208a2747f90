"""``r1deploy bench``: streaming load test of an OpenAI-compatible endpoint (TTFT, ITL, E2E, tokens/s).

The API key comes from ``--api-key-file`` or ``$R1DEPLOY_API_KEY`` (``$OPENAI_API_KEY``), or from the
inventory's credentials with ``--inventory``; never from a flag value (it would be in the process list).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from r1deploy.commands.run import add_json_option, print_json, refuse
from r1deploy.events import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from r1deploy.runner import BadInput, resolve_inventory

if TYPE_CHECKING:  # asyncio and ssl are imported only when a benchmark runs (every CLI start pays imports)
    from r1deploy.bench import BenchConfig


def render(summary: dict[str, Any], console: Console) -> None:
    cfg = summary["config"]
    console.print(
        f"[bold]{cfg['model']}[/] at {cfg['url']} ({cfg['endpoint']}): concurrency {cfg['concurrency']}, "
        f"{summary['requests']} requests, ~{cfg['prompt_tokens']} prompt tokens "
        f"(measured {summary['prompt_tokens_mean']}), max {cfg['max_tokens']} output tokens"
        + (", ignore_eos" if cfg["ignore_eos"] else "")
    )
    table = Table(title_justify="left")
    for column in ("metric", "mean", "p50", "p90", "p99"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for key, label in (
        ("ttft_ms", "time to first token (ms)"),
        ("itl_ms", "inter-token latency (ms)"),
        ("tpot_ms", "time per output token (ms)"),
        ("e2e_latency_ms", "end-to-end latency (ms)"),
    ):
        dist = summary[key]
        table.add_row(
            label, *[("-" if dist[k] is None else f"{dist[k]:.1f}") for k in ("mean", "p50", "p90", "p99")]
        )
    console.print(table)
    style = "bold red" if summary["errors"] else "bold green"
    console.print(
        f"output {summary['output_throughput_tok_s']} tokens/s, "
        f"{summary['request_throughput_rps']} requests/s, "
        f"{summary['output_tokens']} tokens in {summary['duration_s']} s; "
        f"[{style}]{summary['completed']} ok, {summary['errors']} errors[/]"
    )
    for error, count in summary["error_kinds"].items():
        console.print(f"  [red]{count} x {error}[/]")


def read_prompts(path: Path) -> list[str]:
    """One prompt per line, or JSON Lines with a ``prompt`` field (vLLM's custom dataset format)."""
    import json

    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise BadInput(f"cannot read --prompts-file {path}: {exc.strerror}") from exc
    if path.suffix == ".jsonl":
        try:
            prompts = [str(json.loads(line)["prompt"]) for line in lines]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{path}: every line must be a JSON object with a 'prompt' ({exc})") from exc
    else:
        prompts = lines
    if not prompts:
        raise BadInput(f"{path} has no prompts")
    return prompts


def _config(args: argparse.Namespace) -> BenchConfig:
    from r1deploy.bench import BenchConfig, read_api_key
    from r1deploy.status import StatusError, endpoints

    url, model, key, cadata = args.url, args.model, None, None
    if args.via != "vllm" and not args.inventory:
        raise BadInput("--via nginx needs --inventory (the chat page's address and certificate come from it)")
    if args.inventory:
        via_nginx = args.via == "nginx"
        try:
            ep = endpoints(resolve_inventory(args.inventory), fetch_cert=via_nginx and not args.insecure)
        except StatusError as exc:
            raise BadInput(str(exc)) from exc
        if via_nginx:
            if not ep.public_url or not ep.nginx_vllm_route:
                raise BadInput(
                    "nginx has no /v1/ route to vLLM in this inventory (nginx_vllm_route_enabled: false)"
                )
            url = url or f"{ep.public_url}/v1"
            cadata = ep.tls_cert_pem or None
        url = url or ep.vllm_url
        model = model or ep.model
        if not args.api_key_file:
            try:
                key = read_api_key(str(ep.api_key_file), {})
            except OSError as exc:
                raise BadInput(f"cannot read the API key {ep.api_key_file}: {exc.strerror}") from exc
    if not url or not model:
        raise BadInput("give --url and --model, or --inventory INVENTORY to take them from a deployed stack")
    if key is None:
        try:
            key = read_api_key(args.api_key_file, dict(os.environ))
        except OSError as exc:
            raise BadInput(f"cannot read --api-key-file {args.api_key_file}: {exc.strerror}") from exc
    return BenchConfig(
        url=url,
        model=model,
        api_key=key,
        concurrency=args.concurrency,
        requests=args.requests,
        prompt_tokens=args.prompt_tokens,
        max_tokens=args.max_tokens,
        endpoint=args.endpoint,
        ignore_eos=args.ignore_eos,
        temperature=args.temperature,
        timeout_s=args.timeout,
        insecure=args.insecure,
        cafile=args.cafile,
        cadata=cadata if not args.cafile else None,
        seed=args.seed,
    )


def _handle(args: argparse.Namespace) -> int:
    import asyncio

    from r1deploy.bench import BenchError, plot, run_bench

    try:
        config = _config(args)
        prompts = read_prompts(Path(args.prompts_file)) if args.prompts_file else None
        if config.concurrency < 1 or config.requests < 1 or config.prompt_tokens < 1 or config.max_tokens < 1:
            raise BadInput("--concurrency, --requests, --prompt-tokens and --max-tokens must be at least 1")
        if args.plot and not str(args.plot).endswith(".png"):
            raise BadInput("--plot takes a .png file name")
    except BadInput as exc:
        return refuse(args, "bench", str(exc))
    if not args.json:
        print(f"benchmarking {config.model} at {config.url} ...", file=sys.stderr)
    try:
        result = asyncio.run(run_bench(config, prompts))
    except BenchError as exc:
        message = str(exc)
        print(f"r1deploy bench: {message}", file=sys.stderr)
        if args.json:
            print_json(
                {
                    "schema": "r1deploy.bench/1",
                    "ok": False,
                    "exit_code": EXIT_UNREACHABLE,
                    "errors": [message],
                }
            )
        return EXIT_UNREACHABLE
    summary = result.summary()
    if args.plot:
        try:
            plot(result, Path(args.plot))
            summary["plot"] = str(Path(args.plot).resolve())
        except BenchError as exc:
            return refuse(args, "bench", str(exc))
    code = EXIT_OK if summary["ok"] else EXIT_FAILED
    summary["exit_code"] = code
    if args.json:
        print_json(summary)
    else:
        render(summary, Console())
        if args.plot:
            print(f"plot: {summary['plot']}")
    return code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="streaming load test: TTFT, inter-token and end-to-end latency (p50/p90/p99), tokens/s, errors",
        description="Asynchronous OpenAI-compatible load generator (streaming). Metrics are defined as in "
        "vLLM's own benchmark client. Exit 0 all requests ok, 1 some failed, 2 bad input, "
        "3 server unreachable.",
    )
    parser.add_argument("--url", help="API base, e.g. http://10.0.0.11:8000/v1 (default: from --inventory)")
    parser.add_argument("--model", help="served model name (default: from --inventory)")
    parser.add_argument("-i", "--inventory", help="take URL, model and API key from this deployed inventory")
    parser.add_argument(
        "--via",
        choices=("vllm", "nginx"),
        default="vllm",
        help="with --inventory: vLLM on the head (default), or nginx's /v1/ route over https",
    )
    parser.add_argument(
        "--api-key-file", help="file with the API key (or a VLLM_API_KEY= line); else $R1DEPLOY_API_KEY"
    )
    parser.add_argument("-c", "--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument("-n", "--requests", type=int, default=32, help="requests in total (default 32)")
    parser.add_argument(
        "--prompt-tokens", type=int, default=128, help="prompt size as the server counts it (default 128)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="output tokens per request at most (default 128)"
    )
    parser.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    parser.add_argument(
        "--prompts-file",
        help="use these prompts (one a line, or .jsonl with a 'prompt' field) instead of random ones "
        "sized to --prompt-tokens",
    )
    parser.add_argument(
        "--ignore-eos", action="store_true", help="vLLM extension: always generate --max-tokens"
    )
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: the server's)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the random prompts (default: a fresh one, reported in the result; a repeated seed "
        "repeats the prompts, which a prefix cache then serves)",
    )
    parser.add_argument("--insecure", action="store_true", help="https: do not verify the certificate")
    parser.add_argument("--cafile", help="https: CA bundle")
    parser.add_argument("--plot", metavar="FILE.png", help="write latency histograms (needs the bench extra)")
    add_json_option(parser)
    parser.set_defaults(func=_handle)
