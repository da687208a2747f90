#!/usr/bin/python
"""Ansible module: does a running systemd unit predate a file it reads (or a given moment)?

A unit reads its environment files, its token and its unit file when its main process starts; a
file changed after that start has not reached the running process. The roles call this module
after writing their files and restart exactly the units it names, in the cluster's order (Ray head,
workers, vLLM). Because it compares the files with the running process (not with what this run
wrote), a change made by another playbook (``gpu_stack.yml`` writes ``nccl.env``), by hand, or by
a run that failed before its restart still restarts the unit on the next run.

Stdlib only (managed hosts do not have the r1deploy package); never changes the host.
"""

from __future__ import annotations

import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: r1deploy_unit_inputs
short_description: Tell whether a running systemd unit started before a file it reads changed
description:
  - Reads the unit's state and the start time of its main process from systemd
    (C(ExecMainStartTimestampMonotonic), microseconds) and the modification time of each input file.
  - C(restart_needed) is true when the unit is active and an input changed after its main process
    started, or when the process started before C(started_before) (a Unix time, e.g. the moment the
    Ray cluster it depends on became whole again).
  - Never changes the host; supports check mode.
options:
  unit:
    description: The unit, e.g. C(ray-head.service).
    type: str
    required: true
  inputs:
    description: Files the unit reads at start (missing files are ignored).
    type: list
    elements: path
    default: []
  started_before:
    description: Unix time; a main process started before it needs a restart. 0 disables the rule.
    type: float
    default: 0
author: r1deploy
"""

EXAMPLES = r"""
- name: Read what the running head was started with
  r1deploy_unit_inputs:
    unit: ray-head.service
    inputs: [/etc/systemd/system/ray-head.service, /etc/r1deploy/ray.env, /etc/r1deploy/nccl.env]
  register: __ray_head_inputs
"""

RETURN = r"""
active:
  description: The unit's ActiveState is active (or reloading).
  type: bool
  returned: always
main_pid:
  description: The main process ID (0 when none).
  type: int
  returned: always
started_at:
  description: Unix time the main process started (0 when not running).
  type: float
  returned: always
newer_inputs:
  description: Inputs modified after the main process started.
  type: list
  returned: always
restart_needed:
  description: The unit runs with settings older than its inputs (or older than started_before).
  type: bool
  returned: always
reasons:
  description: Why a restart is needed, in words.
  type: list
  returned: always
"""


def unit_properties(module: AnsibleModule, unit: str) -> dict[str, str]:
    argv = [
        "systemctl",
        "show",
        "--property=ActiveState,MainPID,ExecMainStartTimestampMonotonic",
        "--",
        unit,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        module.fail_json(msg=f"systemctl show {unit} failed: {proc.stderr.strip()}")
    props: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("=")
        props[name] = value
    return props


def monotonic_to_unix(usec: int) -> float:
    """systemd's CLOCK_MONOTONIC microseconds as a Unix time (microsecond precision)."""
    now_unix = time.time()
    now_mono = time.clock_gettime(time.CLOCK_MONOTONIC)
    return now_unix - (now_mono - usec / 1e6)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "unit": {"type": "str", "required": True},
            "inputs": {"type": "list", "elements": "path", "default": []},
            "started_before": {"type": "float", "default": 0},
        },
        supports_check_mode=True,
    )
    unit = module.params["unit"]
    props = unit_properties(module, unit)
    active = props.get("ActiveState") in ("active", "reloading")
    main_pid = int(props.get("MainPID") or 0)
    mono = int(props.get("ExecMainStartTimestampMonotonic") or 0)
    started_at = monotonic_to_unix(mono) if active and mono > 0 else 0.0
    newer: list[str] = []
    reasons: list[str] = []
    if started_at:
        for path in module.params["inputs"]:
            try:
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            if mtime > started_at:
                newer.append(path)
        if newer:
            reasons.append(f"{', '.join(newer)} changed after {unit} started")
        before = module.params["started_before"]
        if before and started_at < before:
            reasons.append(f"{unit} started before the cluster it depends on was (re)formed")
    module.exit_json(
        changed=False,
        active=active,
        main_pid=main_pid,
        started_at=round(started_at, 6),
        newer_inputs=newer,
        restart_needed=bool(reasons),
        reasons=reasons,
    )


if __name__ == "__main__":
    main()
