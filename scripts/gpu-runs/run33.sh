#!/usr/bin/env bash
# Issue 4: fused decode path + CUDA graph. Correctness (decode_check: fused vs plain, teacher-forced)
# then resident speed plain / fused without graph / fused with graph, 4B and 14B; streamed check.
set -uo pipefail
export RUST_BACKTRACE=1
L=$OUT/log.txt
for b in bench synth decode_check; do gzip -dc .gpu/$b.gz > /tmp/${b}33 && chmod +x /tmp/${b}33; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> $OUT/table.txt
[ -f /tmp/q4.gguf ] || /tmp/synth33 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth33 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
[ -f /tmp/l8x4.gguf ] || /tmp/synth33 --preset llama-3-8b --layers 4 --output /tmp/l8x4.gguf >> $L 2>&1
C() { tag=$1; t=$2; shift 2; echo "== check $tag: $*" >> $L
  timeout -s KILL $t /tmp/decode_check33 --device cuda --mode resident "$@" > $OUT/check_$tag.txt 2>>$L; echo "rc $? (check $tag)" >> $L
  echo "check $tag: $(tail -1 $OUT/check_$tag.txt)" >> $OUT/table.txt; }
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench33 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); t=d['metrics']
    print('%-16s %-6s %8.2f tok/s  peak %6.0f MiB  sum %s' % ('$tag', d['test'], d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))" >> $OUT/table.txt; }
C q4 120 --model /tmp/q4.gguf --context 1024 -p 200 -n 40
C l8x4 60 --model /tmp/l8x4.gguf --context 1024 -p 100 -n 40
C q14 150 --model /tmp/q14.gguf --context 1024 -p 30 -n 16
for m in q4 q14; do
  CARDINFER_DECODE=plain B ${m}_plain 150 --model /tmp/$m.gguf -p 512 -n 128 -r 3 --mode resident --context 1024
  CARDINFER_GRAPH=0 B ${m}_fused 150 --model /tmp/$m.gguf -p 0 -n 128 -r 3 --mode resident --context 1024
  B ${m}_graph 150 --model /tmp/$m.gguf -p 0 -n 128 -r 3 --mode resident --context 1024
done
B q4_500 120 --model /tmp/q4.gguf -p 128 -n 32 -r 1 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
grep -E "decode path" $L | sort | uniq -c
grep -E "rc |rror|panic" $L | head -20
cat $OUT/table.txt
