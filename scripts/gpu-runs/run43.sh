#!/usr/bin/env bash
# Issue 7: hybrid with the split from a probed profile (CPU block rate with weights from memory),
# against stream-only; Candle CPU thread counts 16 and 12.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe; do gzip -dc .gpu/$b.gz > /tmp/${b}43 && chmod +x /tmp/${b}43; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth43 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth43 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/probe43 --device cuda > $OUT/probe.txt 2>&1; tail -14 $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench43 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  grep -h "plan: hybrid" $OUT/$tag.err >> $OUT/table.txt
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-16s %6.2f tok/s (pred %5.2f)  peak %5.0f MiB  slots %d  hostMB %d streamMB %d sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['slots'], m['host_bytes_per_token']/1e6, m['bytes_streamed_per_token']/1e6, d['generated_checksum']))" >> $OUT/table.txt; }
B q14_str 150 --model /tmp/q14.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 6GiB --context 1024
B q14_hyb 150 --model /tmp/q14.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 6GiB --context 1024 --hybrid
RAYON_NUM_THREADS=12 B q14_hyb_t12 150 --model /tmp/q14.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 6GiB --context 1024 --hybrid
B q4_str 150 --model /tmp/q4.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 500MiB --context 640
B q4_hyb 150 --model /tmp/q4.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 500MiB --context 640 --hybrid
RAYON_NUM_THREADS=12 B q4_hyb_t12 150 --model /tmp/q4.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 500MiB --context 640 --hybrid
grep -E "rc |rror|panic" $L | head -20
cat $OUT/table.txt
