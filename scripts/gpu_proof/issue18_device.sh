#!/usr/bin/env bash
# Issue 18, the last device call (after the wheel parts aa..af were carried with device.sh carry):
# carry .cache/gpu-proof/parts/whl.tar.partag and .cache/gpu-proof/rendered, set LIMIT to the call's
# time limit in seconds. Installs the venv, serves the rendered tp1-v100 units (V100 flags, Ray
# executor, DeepSeek-R1-Distill-Qwen-1.5B shape with dummy weights, its utilisation replaced by the
# V100 32 GB emulation), takes the runtime report, records that start as calibration case
# qwen1.5b-32gb-32k, then runs the other calibration cases while time is left. docs/gpu-proof.md.
LIMIT="${LIMIT:-600}"
set -o pipefail
export PYTHONUNBUFFERED=1
D=scripts/gpu_proof/device.sh
bash $D carry .cache/gpu-proof/parts/whl.tar.partag >/dev/null && bash $D install /tmp/results/install || exit 1
V=/opt/r1deploy/venv/bin/python
$V -m compileall -q -j 0 $($V -c 'import site;print(site.getsitepackages()[0])') >/dev/null
PYTHONPATH=src python3 -m r1deploy.tinymodel /tmp/tm >/dev/null && python3 scripts/calibrate_vllm.py models /srv/models/cal --tokenizer-from /tmp/tm >/dev/null
T=$($V -c 'import torch;print(torch.cuda.mem_get_info()[1])')
U=$(python3 -c "print(repr(0.9*32510*2**20/$T))")
echo "total $T util $U"
R=.cache/gpu-proof/rendered/tp1-v100
S=$R/tp1-node/etc/systemd/system/vllm.service
sed -i "/--gpu-memory-utilization/{n;s/0\.9 /$U /}" $S
grep -A1 -- --gpu-memory-utilization $S
READY_TIMEOUT=240 bash $D serve /tmp/results/serve tp1-v100
echo "serve done at $SECONDS s"
timeout 60 $V roles/vllm_runtime/files/r1deploy_runtime_report.py --gpu > /tmp/results/runtime-report.json 2>/tmp/results/runtime-report.err
tail -c 600 /tmp/results/runtime-report.json
python3 scripts/calibrate_vllm.py record --case qwen1.5b-32gb-32k --log /tmp/results/serve/tp1-v100/tp1-node.vllm.log --unit $S --total $T --out /tmp/results/cal
tar -czf $OUT/all.tar.gz -C /tmp results
python3 scripts/calibrate_vllm.py run --out /tmp/results/cal --models /srv/models/cal --cases qwen7b-32gb-32k,qwen14b-32gb-32k,qwen1.5b-16gb-32k,llama8b-32gb-32k,qwen1.5b-32gb-4k,qwen7b-16gb-32k --deadline $((LIMIT-25-SECONDS)) --min-case-s 110 --case-timeout 120
echo "end at $SECONDS s"
tar -czf $OUT/all.tar.gz -C /tmp results
