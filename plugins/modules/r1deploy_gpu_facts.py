#!/usr/bin/python
"""Ansible module: run the GPU probes on a host and return their raw output.

The parsing (the rules) lives once, in ``r1deploy.gpufacts`` on the controller; the filter
``r1deploy_gpu_facts`` (plugins/filter/r1deploy_planner.py) turns this module's ``raw`` into the
``r1deploy_gpus`` fact. Managed hosts do not have the r1deploy package, so nothing here imports it;
tests/unit/test_gpufacts.py checks that the query fields equal ``r1deploy.gpufacts.QUERY_FIELDS``.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: r1deploy_gpu_facts
short_description: Probe a host's NVIDIA GPUs (nvidia-smi, else lspci/sysfs) without changing it
description:
  - Runs C(nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version,persistence_mode,
    pci.bus_id --format=csv,noheader,nounits) (without C(compute_cap) on drivers older than R510),
    C(lspci -Dnn) (or reads C(/sys/bus/pci/devices) when pciutils is missing) and reads
    C(/proc/driver/nvidia/version).
  - Returns the raw outputs; the C(r1deploy_gpu_facts) filter builds the C(r1deploy_gpus) fact from them.
  - Never changes the host; supports check mode.
options: {}
author: r1deploy
"""

EXAMPLES = r"""
- name: Probe the GPUs
  r1deploy_gpu_facts:
  register: __preflight_gpu_probe

- name: Build the r1deploy_gpus fact
  ansible.builtin.set_fact:
    r1deploy_gpus: "{{ __preflight_gpu_probe.raw | r1deploy_gpu_facts }}"
"""

RETURN = r"""
raw:
  description: The probes' outputs.
  returned: always
  type: dict
  contains:
    nvidia_smi:
      description: rc, stdout, stderr and the queried fields of nvidia-smi (rc 127 when it is not installed).
      type: dict
    lspci:
      description: rc, stdout and stderr of C(lspci -Dnn), or lspci-like lines built from sysfs.
      type: dict
    proc_version:
      description: Text of /proc/driver/nvidia/version, or null when no NVIDIA module is loaded.
      type: str
"""

QUERY_FIELDS = (
    "index",
    "name",
    "compute_cap",
    "memory.total",
    "driver_version",
    "persistence_mode",
    "pci.bus_id",
)
PROC_VERSION = "/proc/driver/nvidia/version"
SYSFS_PCI = "/sys/bus/pci/devices"


def _run(module, cmd):
    exe = module.get_bin_path(cmd[0])
    if exe is None:
        return {"rc": 127, "stdout": "", "stderr": f"{cmd[0]}: not found"}
    rc, out, err = module.run_command([exe, *cmd[1:]], check_rc=False)
    return {"rc": rc, "stdout": out, "stderr": err}


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _sysfs_lspci():
    lines = []
    if not os.path.isdir(SYSFS_PCI):
        return ""
    for name in sorted(os.listdir(SYSFS_PCI)):
        dev = os.path.join(SYSFS_PCI, name)
        vendor = (_read(os.path.join(dev, "vendor")) or "").lower().replace("0x", "")
        if vendor != "10de":
            continue
        device = (_read(os.path.join(dev, "device")) or "").lower().replace("0x", "")
        cls = (_read(os.path.join(dev, "class")) or "").lower().replace("0x", "")[:4]
        lines.append(f"{name} Class [{cls}]: NVIDIA Corporation Device [{vendor}:{device}]")
    return "\n".join(lines)


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    fields = list(QUERY_FIELDS)
    query = ["nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]
    smi = _run(module, query)
    if smi["rc"] != 0 and "compute_cap" in smi["stdout"] + smi["stderr"]:
        fields = [f for f in QUERY_FIELDS if f != "compute_cap"]
        smi = _run(module, ["nvidia-smi", "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"])
    smi["fields"] = fields
    lspci = _run(module, ["lspci", "-Dnn"])
    if lspci["rc"] == 127:
        lspci = {"rc": 0, "stdout": _sysfs_lspci(), "stderr": "lspci not found: read " + SYSFS_PCI}
    proc = _read(PROC_VERSION) if os.path.exists(PROC_VERSION) else None
    module.exit_json(changed=False, raw={"nvidia_smi": smi, "lspci": lspci, "proc_version": proc})


if __name__ == "__main__":
    main()
