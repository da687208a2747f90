"""Set up what the gpu_stack Molecule scenario runs on: the lab's engine, image, network and apt mirror.

The scenario's hosts are the lab's own systemd image (r1deploy.lab.image) on an internal Docker network
whose gateway serves the lab's apt-cacher-ng, so the roles install real Debian packages offline.

    eval "$(.venv/bin/python molecule/gpu_stack/lab_env.py)" && molecule test -s gpu_stack
    .venv/bin/python molecule/gpu_stack/lab_env.py --down      # stop the mirror, remove the network

tests/lab/test_gpu_stack_molecule.py calls :func:`up` and :func:`down` itself.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from r1deploy.lab import mirrors, netfilter
from r1deploy.lab.docker import Docker, ensure_engine
from r1deploy.lab.image import ensure_image
from r1deploy.lab.paths import state_dir

NAME = "molecule-gpu"
NETWORK = f"r1deploy-{NAME}"
LABEL = "r1deploy.molecule"


def _state() -> Path:
    path = state_dir() / NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def up(log=print) -> dict[str, str]:
    docker = Docker()
    log(ensure_engine(docker))
    image = ensure_image(docker, log=log)
    found = docker.run(["network", "inspect", NETWORK], check=False)
    if found.returncode != 0:
        # --internal: the hosts reach each other and the gateway (the mirror), nothing else.
        docker.run(["network", "create", "--internal", "--label", f"{LABEL}={NAME}", NETWORK])
    doc = json.loads(docker.run(["network", "inspect", NETWORK]).stdout)[0]
    gateway = doc["IPAM"]["Config"][0]["Gateway"]
    bridge = (doc.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{doc['Id'][:12]}"
    log(netfilter.ensure_drop(bridge, NAME))
    wheelhouse = _state() / "wheelhouse"  # the scenario installs no Python packages
    wheelhouse.mkdir(exist_ok=True)
    urls = mirrors.ensure(NAME, gateway, _state(), wheelhouse)
    return {
        "R1DEPLOY_LAB_IMAGE": image,
        "R1DEPLOY_MOLECULE_NETWORK": NETWORK,
        "R1DEPLOY_MOLECULE_APT_MIRROR": urls.apt,
        "R1DEPLOY_MOLECULE_APT_SECURITY_MIRROR": urls.apt_security,
    }


def down() -> None:
    mirrors.stop(_state())
    netfilter.remove_drops(NAME)
    Docker().run(["network", "rm", NETWORK], check=False)


def main(argv: list[str]) -> int:
    if "--down" in argv:
        down()
        return 0
    env = up(log=lambda m: print(m, file=sys.stderr))
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
