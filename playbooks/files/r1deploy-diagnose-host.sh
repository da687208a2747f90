#!/bin/bash
# r1deploy diagnose: collect one host's state into a folder (never fails: a missing tool is noted).
# Usage: r1deploy-diagnose-host.sh OUTDIR RAY_ADDRESS VENV SERVICE_USER
# Secret files (vllm-secrets.env, Open WebUI's secrets.env, nginx's key map, TLS keys) are never read;
# the controller also scrubs every known secret value and key/token pattern from what comes back.
set -u
out=$1 ray_address=${2:-} venv=${3:-/opt/r1deploy/venv} user=${4:-r1deploy}
mkdir -p "$out"
missing="$out/MISSING.txt"
: >"$missing"

# run NAME CMD...: stdout+stderr of CMD into NAME.txt; a missing command is noted, never fatal.
run() {
  local name=$1
  shift
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then
    echo "$1: not installed (needed for $name.txt)" >>"$missing"
    return 0
  fi
  { echo "\$ $*"; timeout 60 "$@" 2>&1; echo "[exit $?]"; } >"$out/$name.txt"
}

# GPUs and driver
run nvidia-smi-q nvidia-smi -q
run nvidia-smi nvidia-smi
{
  echo "# /proc/driver/nvidia/version (the driver's flavour: 'Open Kernel Module' or proprietary)"
  cat /proc/driver/nvidia/version 2>&1
  echo "# loaded modules"
  grep -E '^(nvidia|nouveau)' /proc/modules 2>&1 || echo "no nvidia or nouveau module loaded"
  echo "# modinfo nvidia (license)"
  modinfo -F license nvidia 2>&1 || true
  echo "# modprobe.d blacklists"
  grep -rs nouveau /etc/modprobe.d/ || echo "no nouveau blacklist"
  echo "# Secure Boot"
  mokutil --sb-state 2>&1 || echo "mokutil not available"
} >"$out/driver.txt"
if dmesg >/dev/null 2>&1; then
  dmesg 2>&1 | grep -E 'NVRM|nvidia|nouveau|Xid' >"$out/dmesg-nvrm.txt" || echo "no NVRM, nvidia, nouveau or Xid lines in dmesg" >"$out/dmesg-nvrm.txt"
else
  echo "dmesg: not readable here ($(dmesg 2>&1 | head -1))" >>"$missing"
  journalctl -k --no-pager -o short-iso 2>/dev/null | grep -E 'NVRM|nvidia|nouveau|Xid' >"$out/dmesg-nvrm.txt" || true
fi
run dkms-status dkms status
run lspci-nvidia lspci -nn -d 10de:

# Versions
{
  echo "# os-release"; cat /etc/os-release
  echo "# kernel"; uname -a
  echo "# python3"; python3 --version 2>&1
  echo "# r1deploy facts"; for f in /etc/ansible/facts.d/r1deploy*.fact; do [ -f "$f" ] && { echo "## $f"; cat "$f"; echo; }; done
  echo "# lock stamp"; cat "$venv/.r1deploy-lock.sha256" 2>&1
  echo "# nginx"; nginx -v 2>&1 || true
} >"$out/versions.txt"
if [ -x "$venv/bin/python" ]; then
  run pip-freeze-serving "$venv/bin/python" -m pip freeze --disable-pip-version-check
  run runtime-report "$venv/bin/python" /opt/r1deploy/bin/r1deploy-runtime-report
else
  echo "$venv/bin/python: no serving venv on this host" >>"$missing"
fi
if [ -x /opt/open-webui/venv/bin/python ]; then
  run pip-freeze-open-webui /opt/open-webui/venv/bin/python -m pip freeze --disable-pip-version-check
fi
run dpkg-r1deploy-packages sh -c "dpkg-query -W -f='\${Package} \${Version}\n' 2>/dev/null | grep -Ei 'nvidia|cuda|nccl|nginx|libnccl|dkms|linux-image'"

# Network
run ip-addr ip -d addr
run ip-route ip route show table all
run ip-rule ip rule
run ss-listen ss -ltnup
run ibstat ibstat
run ibv-devinfo ibv_devinfo
{ echo "# /etc/hosts"; cat /etc/hosts; echo "# resolv.conf"; cat /etc/resolv.conf; } >"$out/names.txt" 2>&1

# Disk and memory
run df df -h
run free free -m

# Units: every r1deploy unit (the known ones and any file under /etc/systemd/system naming r1deploy)
units="ray-head.service ray-worker.service vllm.service open-webui.service nginx.service nvidia-persistenced.service"
found=$(grep -ls r1deploy /etc/systemd/system/*.service /etc/systemd/system/*.timer 2>/dev/null | xargs -r -n1 basename)
mkdir -p "$out/units" "$out/journal"
for unit in $(echo $units $found | tr ' ' '\n' | sort -u); do
  if [ "$(systemctl show -P LoadState "$unit" 2>/dev/null)" != "loaded" ]; then
    echo "$unit: not installed" >>"$out/units/NOT-INSTALLED.txt"
    continue
  fi
  systemctl cat "$unit" >"$out/units/$unit" 2>&1
  systemctl status --no-pager --lines=0 "$unit" >"$out/units/$unit.status" 2>&1
  journalctl --unit="$unit" --boot --no-pager --lines=3000 -o short-iso >"$out/journal/$unit.log" 2>&1
  # The tail alone is mostly access log on a busy server: keep how the running instance started too
  # (its first lines, by systemd's invocation id), which is what a crash loop or a bad flag shows in.
  invocation=$(systemctl show -P InvocationID "$unit" 2>/dev/null)
  if [ -n "$invocation" ]; then
    journalctl "_SYSTEMD_INVOCATION_ID=$invocation" --no-pager -o short-iso 2>&1 | head -n 1500 >"$out/journal/$unit.start.log"
  fi
done

# Configuration r1deploy rendered (never the secret files)
mkdir -p "$out/config"
for f in /etc/r1deploy/*.env /etc/r1deploy/*.json /etc/r1deploy/*.conf /etc/open-webui/open-webui.env \
  /etc/nginx/nginx.conf /etc/pip.conf /etc/apt/sources.list.d/*.sources; do
  case "$f" in *secret* | *key*) continue ;; esac
  [ -f "$f" ] && cp "$f" "$out/config/$(echo "${f#/}" | tr / _)"
done

# Ray: status from the head's address, and the logs of the latest session
if [ -n "$ray_address" ] && [ -x "$venv/bin/ray" ]; then
  # The cluster takes token authentication: the mode and the token's path from the node's ray.env
  # (the token itself stays in its file, read by the service user).
  ray_auth=()
  while IFS= read -r line; do ray_auth+=("$line"); done < <(grep -E '^RAY_AUTH_(MODE|TOKEN_PATH)=' /etc/r1deploy/ray.env 2>/dev/null)
  { echo "\$ ray status --address $ray_address"; timeout 60 runuser -u "$user" -- env RAY_USAGE_STATS_ENABLED=0 "${ray_auth[@]}" "$venv/bin/ray" status --address "$ray_address" 2>&1; echo "[exit $?]"; } >"$out/ray-status.txt"
else
  echo "ray: no Ray in $venv on this host" >>"$missing"
fi
for logs in /tmp/ray/session_latest/logs /var/lib/r1deploy/ray/session_latest/logs; do
  [ -d "$logs" ] || continue
  mkdir -p "$out/ray-logs"
  for f in "$logs"/*; do
    [ -f "$f" ] && tail -n 500 "$f" >"$out/ray-logs/$(basename "$f")" 2>/dev/null
  done
done
[ -d "$out/ray-logs" ] || echo "ray logs: no session_latest/logs folder" >>"$missing"
exit 0
