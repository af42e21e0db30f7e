#!/usr/bin/env bash
# Built at commit 5a0b96d (probe with the side-by-side CPU/link measurement, since reverted).
# Issue 7: the probe measures the CPU block and the link side by side (shared host memory
# bandwidth); the planner's split from those rates; stream-only and a forced split beside it.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe; do gzip -dc .gpu/$b.gz > /tmp/${b}51 && chmod +x /tmp/${b}51; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth51 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth51 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/probe51 --device cuda > $OUT/probe.txt 2>&1; grep -E "CPU|hop|overhead|h2d" $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench51 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  path=$(grep -m1 "decode path" $OUT/$tag.err | cut -c14-40); split=$(grep -m1 "hybrid:" $OUT/$tag.err | grep -oE "[0-9]+ of [0-9]+ streamed|simulated [0-9.]+ ms")
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-14s %6.2f tok/s (pred %5.2f) peak %5.0f MiB host %4.0f MB hop %5.2f s host %5.2f s sum %s | %s | %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['hop_wait_secs'], m['host_secs'], d['generated_checksum'], '$path', '''$split'''.replace(chr(10),' ')))" >> $OUT/table.txt; }
Q14="--model /tmp/q14.gguf -p 0 -n 32 -r 3 --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf -p 0 -n 32 -r 3 --vram-budget 510MiB --context 640"
B q14_str 150 $Q14 --mode auto
RAYON_NUM_THREADS=14 B q14_hyb 150 $Q14 --mode auto --hybrid
RAYON_NUM_THREADS=14 B q14_h8 150 $Q14 --mode auto --host-layers 8
B q4_str 120 $Q4 --mode auto
RAYON_NUM_THREADS=12 B q4_hyb 120 $Q4 --mode auto --hybrid
RAYON_NUM_THREADS=12 B q4_h14 120 $Q4 --mode auto --host-layers 14
cat $OUT/*.err | grep -E "device memory|decode path" > $OUT/mem.txt; rm -f $OUT/*.err $OUT/q*.txt
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/table.txt
