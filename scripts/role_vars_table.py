#!/usr/bin/env python3
"""Print a role's variables as a Markdown table from meta/argument_specs.yml (the source of truth).

Usage: scripts/role_vars_table.py roles/NAME   (paste the output into roles/NAME/README.md)
"""

import sys
from pathlib import Path

import yaml


def table(role: Path) -> str:
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, option in next(iter(specs["argument_specs"].values())).get("options", {}).items():
        value = defaults.get(name, option.get("default", ""))
        shown = " ".join(str(value).split()) if value != "" else '""'
        if len(shown) > 60:
            shown = shown[:57] + "..."
        shown = shown.replace("|", "\\|")
        rows.append(f"| `{name}` | `{shown}` | {option.get('description', '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
