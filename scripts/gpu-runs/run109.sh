#!/usr/bin/env bash
# Issue 7, session 13: where a 4B pass goes against the planner's simulation. The final
# binaries (*104), fixed 18 host layers, CARDINFER_TIMELINE=2 (every block of every pass),
# 40 tokens; the probe's profile saved for the simulation.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench104 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
cp ~/.cache/cardinfer/profiles/*.json $OUT/profile.json 2>/dev/null
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
timeout -s KILL 100 /tmp/bench104 --device cuda $Q4 -r 1 --hybrid --host-layers 18 > /tmp/plain.txt 2> $OUT/plain.err
CARDINFER_TIMELINE=2 timeout -s KILL 100 /tmp/bench104 --device cuda $Q4 -r 1 --hybrid --host-layers 18 > /tmp/tl.txt 2> $OUT/timeline.err
for f in plain tl; do grep '^{' /tmp/$f.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); print('%-6s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$f', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))" >> $T; done
grep -c "^\[timeline\]" $OUT/timeline.err >> $T
cat $T
