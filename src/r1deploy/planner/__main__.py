"""``python -m r1deploy.planner ...``: the same as ``r1deploy plan ...``, with only the standard library
and this package (for machines without the CLI's other dependencies, e.g. the lent GPU machine)."""

from __future__ import annotations

import argparse
import sys

from r1deploy.commands import plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1deploy.planner")
    sub = parser.add_subparsers(dest="command")
    plan.register(sub)
    args = parser.parse_args(["plan", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
