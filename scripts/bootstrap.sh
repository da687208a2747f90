#!/usr/bin/env bash
# Prepare this controller for r1deploy's lab and tests: Debian packages, the project venv.
# Idempotent and quick when nothing changed (stamps keyed by a hash of what they install).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
# Debian packages the lab and the tests use on the controller:
#   docker.io      the lab's container engine (started by `r1deploy lab up`, not by init)
#   debootstrap    builds the lab's systemd host image from the Debian mirror, no registry
#   apt-cacher-ng  the lab's apt mirror (the same role a site's own mirror plays when air-gapped)
#   nginx-light    `nginx -t` on rendered configs in the static tier
#   chromium       the real browser for the chat-page test (driven by Playwright, never downloaded)
#   openssh-client rsync  how Ansible reaches the lab's hosts and fans out the model
#   gpg            signs the stand-in NVIDIA repository of the gpu_stack Molecule scenario
APT_PACKAGES=(docker.io debootstrap apt-cacher-ng nginx-light chromium fonts-liberation gpg
  openssh-client rsync iproute2 iptables procps curl)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  # Package postinst scripts must not start daemons here: the lab starts its own.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

stamp_hash=$(cat pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.r1deploy-bootstrap-$stamp_hash"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: creating $VENV (Python: $PYTHON)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  rm -f "$VENV"/.r1deploy-bootstrap-*
  touch "$stamp"
fi
