#!/usr/bin/env bash
# Issue 7: hybrid by slot count and Candle CPU thread count (probed profile first).
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe; do gzip -dc .gpu/$b.gz > /tmp/${b}44 && chmod +x /tmp/${b}44; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth44 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth44 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/probe44 --device cuda > $OUT/probe.txt 2>&1; grep "CPU" $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench44 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-16s %6.2f tok/s (pred %5.2f)  peak %5.0f MiB  slots %d  hostMB %d streamMB %d sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['slots'], m['host_bytes_per_token']/1e6, m['bytes_streamed_per_token']/1e6, d['generated_checksum']))" >> $OUT/table.txt; }
Q14="--model /tmp/q14.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 6GiB --context 1024 --hybrid"
Q4="--model /tmp/q4.gguf -p 0 -n 32 -r 3 --mode auto --vram-budget 500MiB --context 640 --hybrid"
for t in 10 12 14; do RAYON_NUM_THREADS=$t B q14_t${t}_s2 150 $Q14; done
for s in 3 4; do RAYON_NUM_THREADS=12 B q14_t12_s$s 150 $Q14 --slots $s; done
for t in 10 12 14; do RAYON_NUM_THREADS=$t B q4_t${t}_s2 150 $Q4; done
RAYON_NUM_THREADS=12 B q4_t12_s3 150 $Q4 --slots 3
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/table.txt
