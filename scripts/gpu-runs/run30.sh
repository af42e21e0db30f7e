#!/usr/bin/env bash
# Decode overhead, by operation: host queueing vs kernel time per call at Qwen3-4B's shapes (op_cost example).
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
gzip -dc .gpu/op_cost.gz > /tmp/op_cost30 && chmod +x /tmp/op_cost30
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
timeout -s KILL 200 /tmp/op_cost30 --device cuda --calls 2000 > $OUT/op_cost.md 2>> $L; echo "rc $?" >> $L
timeout -s KILL 200 /tmp/op_cost30 --device cuda --calls 2000 > $OUT/op_cost2.md 2>> $L; echo "rc $?" >> $L
cat $L | tail -5
cat $OUT/op_cost.md
tail -16 $OUT/op_cost2.md | cut -d'|' -f2,4,5
