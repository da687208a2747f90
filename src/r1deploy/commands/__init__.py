"""CLI subcommands. Each module here exposes ``register(subparsers)``; cli.py discovers them.

A command's handler is set with ``parser.set_defaults(func=handler)`` and returns the exit code:
0 ok, 1 failed task, 2 bad input or refused plan, 3 unreachable host, 130 interrupted.
"""
