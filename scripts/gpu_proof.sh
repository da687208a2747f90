#!/usr/bin/env bash
# r1deploy GPU proof: run the units playbooks/render_units.yml rendered, without systemd, and prove the
# serving path (vLLM over Ray: /v1/models, a streamed chat with the reasoning split, the placement
# group on every GPU, pipeline stages per Ray node, NCCL version and transport, r1deploy bench), then
# stop everything by PID. On a deployed cluster, `check` runs the same checks against the running
# services (a post-deploy check). docs/gpu-proof.md has the details and the recorded results.
#
#   scripts/gpu_proof.sh lint  RENDERED
#   scripts/gpu_proof.sh run   RENDERED --state DIR [--generate-secrets] [--bench] [--ready-timeout S]
#   scripts/gpu_proof.sh up|check|down RENDERED --state DIR [...]
#   scripts/gpu_proof.sh facts OUTDIR          GPU probes, the r1deploy_gpus fact and two plans
#   scripts/gpu_proof.sh nccl  OUTDIR [N ...]  all-reduce on N GPUs (default 2 and all), NCCL INFO on
#
# RENDERED is a folder written by playbooks/render_units.yml (manifest.json + one folder per host).
# PYTHON (default python3) runs the orchestrator; it needs only the standard library. The units
# themselves run with the serving venv named in their ExecStart lines.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
py="${PYTHON:-python3}"

# NVLink multicast (NVLS) stays off unless the caller decided otherwise: a program that uses it can
# take a shared host's GPUs out of service. The rendered environment sets the same variables.
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
export TORCH_SYMM_MEM_DISABLE_MULTICAST="${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1}"
export NVSHMEM_DISABLE_NVLS="${NVSHMEM_DISABLE_NVLS:-1}"
export PYTHONUNBUFFERED=1

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

facts() {
  local out="$1"
  mkdir -p "$out"
  local q=index,name,compute_cap,memory.total,driver_version,persistence_mode,pci.bus_id
  nvidia-smi --query-gpu=$q --format=csv,noheader,nounits >"$out/query-nounits.csv"
  nvidia-smi --query-gpu=$q --format=csv,noheader >"$out/query.csv"
  nvidia-smi >"$out/nvidia-smi.txt"
  nvidia-smi topo -m >"$out/topo.txt" 2>&1 || true
  cat /proc/driver/nvidia/version >"$out/proc-driver-nvidia-version.txt" 2>&1 || true
  {
    echo "kernel: $(uname -r)"
    grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release || true
    echo "python3: $("$py" -V 2>&1) at $(command -v "$py")"
    "$py" - <<'EOF' 2>&1 || true
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", ".".join(map(str, torch.cuda.nccl.version())))
print("devices", torch.cuda.device_count(), [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())])
EOF
    env | grep -E '^(NCCL|NVSHMEM|TORCH_SYMM|CUDA_)' | sort || true
    ip -4 addr show lo 2>/dev/null | grep inet || true
  } >"$out/system.txt"
  PYTHONPATH="$repo/src" "$py" -m r1deploy.gpufacts --raw >"$out/gpufacts.json"
  # Issue #3's plan: the 32B distill on one H200 (expect bfloat16 and a fit on one card).
  PYTHONPATH="$repo/src" "$py" -m r1deploy.cli plan --model DeepSeek-R1-Distill-Qwen-32B --gpu h200 \
    --nodes 1 --gpus-per-node 1 --json >"$out/plan-32b-h200x1.json" || true
  local n cc mib
  n=$(grep -c . "$out/query-nounits.csv")
  cc=$(head -1 "$out/query-nounits.csv" | cut -d, -f3 | tr -d ' ')
  mib=$(head -1 "$out/query-nounits.csv" | cut -d, -f4 | tr -d ' ')
  # The same model planned from the probed values (compute capability and memory from nvidia-smi).
  PYTHONPATH="$repo/src" "$py" -m r1deploy.cli plan --model DeepSeek-R1-Distill-Qwen-32B \
    --compute-capability "$cc" --gpu-memory-mib "$mib" --nodes 1 --gpus-per-node "$n" --json \
    >"$out/plan-32b-probed.json" || true
}

nccl() {
  local out="$1"; shift
  mkdir -p "$out"
  local all n envf
  all=$(nvidia-smi -L | grep -c '^GPU')
  local sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(2 "$all")
  envf="$out/nccl.env"
  printf 'NCCL_NVLS_ENABLE=0\nTORCH_SYMM_MEM_DISABLE_MULTICAST=1\nNVSHMEM_DISABLE_NVLS=1\nNCCL_DEBUG=INFO\n' >"$envf"
  for n in "${sizes[@]}"; do
    local devs; devs=$(seq -s, 0 $((n - 1)))
    echo "== all-reduce on $n GPU(s) ($devs)"
    CUDA_VISIBLE_DEVICES=$devs "$py" "$repo/roles/nccl/files/r1deploy_nccl_check.py" --backend nccl \
      --nproc "$n" --world-size "$n" --master-addr 127.0.0.1 --master-port $((29551 + n)) \
      --env-file "$envf" --sizes-mib 1 16 64 256 1024 --iters 20 --timeout 180 >"$out/allreduce-$n.json" || true
    PYTHONPATH="$repo/src" "$py" - "$out/allreduce-$n.json" <<'EOF' | tee "$out/allreduce-$n.txt"
import json, sys
from r1deploy import gpustack
run = json.load(open(sys.argv[1]))
results = run.get("results") or []
log = "\n".join(run.get("nccl_log") or [])
v = gpustack.nccl_verdict(results, "nccl", 1, log)
print("\n".join(gpustack.format_results(results)))
print("verdict:", "PASS" if v["ok"] else "FAIL", v["message"], "| transports:", v["transports"])
print("errors:", run.get("errors"))
for line in run.get("nccl_log") or []:
    if "NCCL version" in line or " via " in line:
        print(line); break
EOF
  done
  if [ -x "$repo/scripts/nccl_check_device.sh" ] || [ -f "$repo/scripts/nccl_check_device.sh" ]; then
    echo "== scripts/nccl_check_device.sh"
    timeout 240 bash "$repo/scripts/nccl_check_device.sh" >"$out/nccl_check_device.log" 2>&1 || true
    tail -20 "$out/nccl_check_device.log"
  fi
}

[ $# -ge 2 ] || usage
cmd="$1"; shift
case "$cmd" in
  facts) facts "$@" ;;
  nccl) nccl "$@" ;;
  lint|up|check|down|run) exec "$py" "$here/gpu_proof/proof.py" "$cmd" "$@" ;;
  *) usage ;;
esac
