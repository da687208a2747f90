#!/usr/bin/env bash
# Benchmark: the model role's fan-out (head -> workers, verified) vs a bare rsync of the same bytes.
#
#   scripts/bench_model_fanout.sh INVENTORY [SIZE_MB]
#
# Makes a synthetic model folder of SIZE_MB (default 512) on the head only, then
#   A) runs the model role with model_source=present: workers lack it, so they pull it from the
#      head's temporary rsync daemon and every node is verified against the sha256 manifest;
#   B) removes it from the workers and copies the same bytes with a bare rsync (same transport,
#      no manifest, no verification, no Ansible).
# Prints both wall times and MB/s. Removes the synthetic model afterwards. Touches nothing else.
set -euo pipefail
inv=${1:?usage: $0 INVENTORY [SIZE_MB]}
size=${2:-512}
cd "$(dirname "$0")/.."
export ANSIBLE_CONFIG=$PWD/ansible.cfg
bin=.venv/bin
name=r1deploy-bench-fanout
dir=/srv/models/$name
head=$($bin/ansible-inventory -i "$inv" --list | python3 -c 'import json,sys; print(json.load(sys.stdin)["ray_head"]["hosts"][0])')
head_ip=$($bin/ansible-inventory -i "$inv" --host "$head" | python3 -c 'import json,sys; print(json.load(sys.stdin)["r1deploy_node_ip"])')
adhoc() { $bin/ansible "$1" -i "$inv" -b -m ansible.builtin.shell -a "$2" >/dev/null; }

# The role run rewrites the model manifest: keep the deployed one and put it back afterwards.
adhoc gpu_nodes "test -f /etc/r1deploy/model-manifest.json && cp -p /etc/r1deploy/model-manifest.json /etc/r1deploy/model-manifest.json.bench-saved || true"
cleanup() {
  adhoc gpu_nodes "rm -rf $dir /etc/r1deploy/rsyncd-bench.conf; test -f /run/r1deploy-rsyncd-bench.pid && kill \$(cat /run/r1deploy-rsyncd-bench.pid) || true"
  adhoc gpu_nodes "test -f /etc/r1deploy/model-manifest.json.bench-saved && mv /etc/r1deploy/model-manifest.json.bench-saved /etc/r1deploy/model-manifest.json || true"
}
trap cleanup EXIT
echo "making ${size} MB on $head"
adhoc "$head" "mkdir -p $dir && head -c 1024 /dev/urandom > $dir/config.json && for i in \$(seq 1 4); do dd if=/dev/urandom of=$dir/model-0000\$i-of-00004.safetensors bs=1M count=\$(( $size / 4 )) status=none; done"

t0=$(date +%s.%N)
$bin/ansible-playbook -i "$inv" playbooks/serving.yml --tags model -e model_source=present -e model_name=$name >/tmp/r1deploy-bench-fanout.log
t1=$(date +%s.%N)
adhoc 'gpu_nodes:!ray_head' "rm -rf $dir"
adhoc "$head" "printf 'pid file = /run/r1deploy-rsyncd-bench.pid\naddress = $head_ip\nport = 8731\nuse chroot = yes\n[m]\n  path = $dir\n  read only = yes\n  uid = nobody\n  gid = nogroup\n' > /etc/r1deploy/rsyncd-bench.conf && rsync --daemon --config=/etc/r1deploy/rsyncd-bench.conf"
t2=$(date +%s.%N)
adhoc 'gpu_nodes:!ray_head' "rsync -a rsync://$head_ip:8731/m/ $dir/"
t3=$(date +%s.%N)
python3 - "$size" "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
size, t0, t1, t2, t3 = (float(x) for x in sys.argv[1:])
role, raw = t1 - t0, t3 - t2
print(f"role fan-out (Ansible run incl. manifest, daemon, verification): {role:6.1f} s  {size / role:7.1f} MB/s")
print(f"bare rsync of the same bytes (one ad-hoc command):              {raw:6.1f} s  {size / raw:7.1f} MB/s")
print(f"ratio role/raw: {role / raw:.2f}")
PY
