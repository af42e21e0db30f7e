#!/usr/bin/env bash
# Issue 7, session 11, run82's loan (binaries of 2c66f33): where slow decode steps go —
# the 4B at 500 MiB, fixed 18 host layers, 100 tokens with CARDINFER_TIMELINE=2.
set -uo pipefail
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
vmstat -n 1 > $OUT/vmstat.txt & VM=$!
CARDINFER_TIMELINE=2 timeout -s KILL 100 /tmp/bench82 --device cuda --model /tmp/q4.gguf -p 0 -n 100 -r 1 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto --hybrid --host-layers 18 > $OUT/bench.txt 2> /tmp/tl.err
kill $VM; grep timeline /tmp/tl.err > $OUT/tl2.txt; grep -v timeline /tmp/tl.err | tail -3
grep '^|' $OUT/bench.txt | tail -2
