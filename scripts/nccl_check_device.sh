#!/usr/bin/env bash
# The NCCL all-reduce health check on one machine's GPUs, without systemd, sshd or Ansible: the same
# script the nccl role installs (roles/nccl/files/r1deploy_nccl_check.py), one process per GPU, and the
# same verdict (r1deploy.gpustack.nccl_check_report) that playbooks/nccl_check.yml prints.
#
#   scripts/nccl_check_device.sh [OUT_DIR]
#
# Needs: python3 with torch (CUDA build, NCCL inside), nvidia-smi, 2+ GPUs. NVLink SHARP multicast is
# left off (NCCL_NVLS_ENABLE=0). Env: PYTHON (default python3), SIZES_MIB, ITERS, NCCL_CHECK_PORT.
# Writes OUT_DIR/nccl_check.json (raw), OUT_DIR/nccl_check_report.json (verdict), OUT_DIR/nccl_check.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp}}
PYTHON=${PYTHON:-python3}
SIZES_MIB=${SIZES_MIB:-"1 16 64 256 1024"}
ITERS=${ITERS:-20}
PORT=${NCCL_CHECK_PORT:-29551}
mkdir -p "$OUT_DIR"

ngpu=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
if [ "$ngpu" -lt 2 ]; then
  echo "nccl_check_device: $ngpu GPU(s) here; an all-reduce check needs at least 2" >&2
  exit 2
fi

envfile=$(mktemp)
trap 'rm -f "$envfile"' EXIT
{
  echo "NCCL_NVLS_ENABLE=0"
  # Anything NCCL_*/GLOO_* the caller exported (e.g. NCCL_P2P_DISABLE=1 for a comparison run).
  env | grep -E '^(NCCL|GLOO)_' | grep -v '^NCCL_NVLS_ENABLE=' || true
} > "$envfile"

# shellcheck disable=SC2086  # SIZES_MIB is a list
"$PYTHON" roles/nccl/files/r1deploy_nccl_check.py \
  --backend nccl --nnodes 1 --node-rank 0 --nproc "$ngpu" --rank-offset 0 --world-size "$ngpu" \
  --master-addr 127.0.0.1 --master-port "$PORT" --env-file "$envfile" \
  --iters "$ITERS" --timeout 600 --sizes-mib $SIZES_MIB > "$OUT_DIR/nccl_check.json" || true

PYTHONPATH=src "$PYTHON" - "$OUT_DIR" "$ngpu" <<'PY'
import json
import sys
from pathlib import Path

from r1deploy import gpustack

out, ngpu = Path(sys.argv[1]), int(sys.argv[2])
raw = (out / "nccl_check.json").read_text()
layout = gpustack.nccl_check_layout({"local": ngpu}, ["local"])
report = gpustack.nccl_check_report({"local": {"stdout": raw}}, layout)
(out / "nccl_check_report.json").write_text(json.dumps(report, indent=2))
lines = [*report["table"], report["verdict"]["message"],
         "transports: " + ", ".join(report["verdict"]["transports"]["vias"]),
         *report["failures"], "PASS" if report["ok"] else "FAIL"]
(out / "nccl_check.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if report["ok"] else 1)
PY
