"""Keep lab traffic on the machine: drop anything from a lab bridge towards the uplink (DOCKER-USER).

The networks are already ``--internal``; this rule is the second wall test-lab.md asks for. Each rule
carries the comment ``r1deploy-lab:<name>`` so ``lab down`` deletes exactly its own.
"""

from __future__ import annotations

import shutil
import subprocess

CHAIN = "DOCKER-USER"


def comment(lab: str) -> str:
    return f"r1deploy-lab:{lab}"


def uplink() -> str | None:
    out = subprocess.run(["ip", "-o", "route", "show", "default"], capture_output=True, text=True).stdout
    parts = out.split()
    return parts[parts.index("dev") + 1] if "dev" in parts else None


def rule(bridge: str, out_dev: str, lab: str) -> list[str]:
    return ["-i", bridge, "-o", out_dev, "-m", "comment", "--comment", comment(lab), "-j", "DROP"]


def ensure_drop(bridge: str, lab: str) -> str:
    """Insert the drop rule once; returns a note for the log."""
    dev = uplink()
    if dev is None:
        return "no default route: nothing to block"
    if shutil.which("iptables") is None:
        return "iptables not found: relying on --internal networks only"
    spec = rule(bridge, dev, lab)
    if _iptables(["-C", CHAIN, *spec]) == 0:
        return f"{CHAIN} drops {bridge} -> {dev}"
    if _iptables(["-I", CHAIN, *spec]) != 0:
        return f"could not add the {CHAIN} rule (is dockerd running with iptables?): relying on --internal"
    return f"{CHAIN} drops {bridge} -> {dev}"


def own_rules(listing: str, lab: str) -> list[list[str]]:
    """Rules in an ``iptables -S CHAIN`` listing whose comment is exactly this lab's."""
    found = []
    for line in listing.splitlines():
        # iptables-nft prints comments in quotes; `-D` needs the bare value back.
        tokens = [tok.strip('"') for tok in line.split()]
        if len(tokens) > 2 and tokens[0] == "-A" and tokens[1] == CHAIN:
            for i, tok in enumerate(tokens[:-1]):
                if tok == "--comment" and tokens[i + 1] == comment(lab):
                    found.append(tokens[2:])
    return found


def remove_drops(lab: str) -> int:
    if shutil.which("iptables") is None:
        return 0
    listing = subprocess.run(["iptables", "-w", "-S", CHAIN], capture_output=True, text=True).stdout
    removed = 0
    for spec in own_rules(listing, lab):
        removed += _iptables(["-D", CHAIN, *spec]) == 0
    return removed


def _iptables(args: list[str]) -> int:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, check=False).returncode
