#!/usr/bin/env bash
# Check after the review mends (attention partial launched like the other kernels, one token
# sequence for the matvec-only mode): fused vs plain, resident speed and ids, graph off, matvec-only.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth decode_check; do gzip -dc .gpu/$b.gz > /tmp/${b}46 && chmod +x /tmp/${b}46; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> $OUT/table.txt
[ -f /tmp/q4.gguf ] || /tmp/synth46 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth46 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
[ -f /tmp/l8x4.gguf ] || /tmp/synth46 --preset llama-3-8b --layers 4 --output /tmp/l8x4.gguf >> $L 2>&1
C() { tag=$1; shift; timeout -s KILL 150 /tmp/decode_check46 --device cuda --mode resident "$@" > $OUT/check_$tag.txt 2>>$L
  echo "check $tag: prompt logits diff $(grep '^| 0 |' $OUT/check_$tag.txt | cut -d'|' -f3) ; $(tail -1 $OUT/check_$tag.txt)" >> $OUT/table.txt; }
B() { tag=$1; t=$2; shift 2; timeout -s KILL $t /tmp/bench46 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l)
    print('%-12s %-6s %8.2f tok/s  peak %6.0f MiB  budget %6s  sum %s' % ('$tag', d['test'], d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, (d['budget_bytes'] or 0)//2**20, d['generated_checksum']))" >> $OUT/table.txt; }
C q4 --model /tmp/q4.gguf --context 1024 -p 512 -n 16
C q14 --model /tmp/q14.gguf --context 1024 -p 64 -n 16
C l8x4 --model /tmp/l8x4.gguf --context 1024 -p 300 -n 16
B q4_res 150 --model /tmp/q4.gguf -p 512 -n 128 -r 3 --mode resident --context 1024
B q14_res 150 --model /tmp/q14.gguf -p 512 -n 128 -r 3 --mode resident --context 1024
CARDINFER_GRAPH=0 B q4_nograph 150 --model /tmp/q4.gguf -p 0 -n 128 -r 3 --mode resident --context 1024
CARDINFER_FUSED_MATVEC_ONLY=1 B q4_matvecs 150 --model /tmp/q4.gguf -p 0 -n 128 -r 3 --mode resident --context 1024
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/table.txt
