#!/usr/bin/env bash
# Steps of the GPU proof on a lent machine that has no systemd and no network (docs/gpu-proof.md):
#
#   device.sh carry PART             copy one carried part of the wheel tar to /tmp/parts
#   device.sh install OUTDIR         join the parts, build /opt/r1deploy/venv (--system-site-packages
#                                    over the machine's torch), install the wheels --no-deps, pip freeze
#   device.sh model OUTDIR           generate the R1-style model into /srv/models/r1deploy-tiny
#   device.sh serve OUTDIR LAYOUT[+LAYOUT] ...
#                                    gpu_proof.sh run for each argument in turn; LAYOUT+LAYOUT runs
#                                    those layouts at the same time (different GPUs and ports)
#
# What a step leaves outside the working tree (/tmp/parts, the venv, the model) stays on the machine
# only while it is warm.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv=/opt/r1deploy/venv
model=/srv/models/r1deploy-tiny
export PYTHONUNBUFFERED=1

ts() { date +%H:%M:%S; }
# Everything a step writes under OUTDIR's parent comes back as one file ($OUT allows 8), refreshed
# after each step so that a command stopped at its time limit still returns what finished.
snapshot() { [ -n "${OUT:-}" ] && tar -czf "$OUT/results.tar.gz.tmp" -C "$(dirname "$1")" . \
  && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"; return 0; }

case "${1:-}" in
  carry)
    mkdir -p /tmp/parts && cp "$2" /tmp/parts/ && ls -la /tmp/parts | tail -n +2
    ;;
  install)
    out="$2"; mkdir -p "$out"
    t0=$(date +%s)
    rm -rf /tmp/whl && mkdir -p /tmp/whl
    cat /tmp/parts/* | tar -x -C /tmp/whl || { echo "join/extract failed"; exit 1; }
    echo "$(ts) wheels: $(ls /tmp/whl/*.whl | wc -l) ($(du -sh /tmp/whl | cut -f1)) in $(( $(date +%s) - t0 ))s"
    # The machine's python3 is itself a venv holding torch: a --system-site-packages venv made from it
    # sees the base interpreter's packages, not that venv's, so a .pth file adds torch's site-packages.
    base_sp=$(python3 -c 'import site; print(site.getsitepackages()[0])')
    python3 -m venv --without-pip --system-site-packages "$venv" || exit 1
    venv_sp=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
    [ "$base_sp" = "$venv_sp" ] || echo "$base_sp" >"$venv_sp/_r1deploy_image_torch.pth"
    "$venv/bin/python" -c 'import torch, pip; print("venv sees torch", torch.__version__)' || exit 1
    "$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir /tmp/whl/*.whl \
      || { echo "pip install failed"; exit 1; }
    echo "$(ts) venv ready in $(( $(date +%s) - t0 ))s"
    {
      echo "# Profile 'cuda': the serving venv of the r1deploy GPU proof (docs/gpu-proof.md), captured with"
      echo "# \`pip list --format=freeze\` (pip freeze's format, with versions for wheels installed from files) on $(date -u +%Y-%m-%d) on the lent $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) machine"
      echo "# ($(nvidia-smi -L | grep -c '^GPU') GPUs, compute capability $(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1), driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1), $(grep PRETTY_NAME /etc/os-release | cut -d'"' -f2), $("$venv/bin/python" -V))."
      echo "# The venv was made with --system-site-packages over that machine's torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') (CUDA 13.0)"
      echo "# stack; vLLM 0.26.0, Ray 2.60.0 and their needs were installed from wheels with --no-deps."
      echo "# Everything the venv can import is listed, so the image's own extras (jax, lightning, ...) are"
      echo "# here too; vLLM 0.26.0 pins torch==2.11.0 (CUDA 13 build): install torch from the PyTorch"
      echo "# cu130 index (https://download.pytorch.org/whl/cu130)."
      "$venv/bin/python" -m pip list --format=freeze 2>/dev/null
    } >"$out/requirements-cuda.txt"
    "$venv/bin/python" -c 'import vllm, ray, torch; print("vllm", vllm.__version__, "ray", ray.__version__, "torch", torch.__version__)' 2>&1 | tail -1 | tee "$out/versions.txt"
    snapshot "$out"
    ;;
  model)
    out="$2"; mkdir -p "$out"
    PYTHONPATH="$repo/src" python3 -m r1deploy.tinymodel "$model" && (cd "$model" && sha256sum ./* | tee "$out/model.sha256")
    snapshot "$out"
    ;;
  serve)
    out="$2"; shift 2; mkdir -p "$out"
    rc=0
    for group in "$@"; do
      pids=()
      for layout in ${group//+/ }; do
        echo "$(ts) == $layout"
        ( bash "$repo/scripts/gpu_proof.sh" run "$repo/.cache/gpu-proof/rendered/$layout" \
            --state "/tmp/proof/$layout" --generate-secrets --bench --ready-timeout "${READY_TIMEOUT:-240}" \
            >"$out/$layout.log" 2>&1
          mkdir -p "$out/$layout" && cp -r /tmp/proof/$layout/. "$out/$layout/" 2>/dev/null
          rm -f "$out/$layout"/*.key "$out/$layout"/*secrets*
          grep -E "PASS|FAIL|readiness|stream:|ray verdict|NCCL:|bench:|stopped|Error|error" "$out/$layout.log" | cut -c1-400
        ) &
        pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p" || rc=1; done
      echo "$(ts) GPU processes left: $(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l)"
      snapshot "$out"
    done
    exit $rc
    ;;
  *)
    sed -n '2,14p' "$0"; exit 2 ;;
esac
