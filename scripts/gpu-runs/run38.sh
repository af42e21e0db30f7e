#!/usr/bin/env bash
# Issue 4: one-kernel masked softmax + SwiGLU for prefill (same bits as the composition):
# prompt logits fused vs plain (decode_check step 0), pp512 resident and streamed, plain vs fused; decode again.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth decode_check; do gzip -dc .gpu/$b.gz > /tmp/${b}38 && chmod +x /tmp/${b}38; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> $OUT/table.txt
[ -f /tmp/q4.gguf ] || /tmp/synth38 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth38 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
[ -f /tmp/l8x4.gguf ] || /tmp/synth38 --preset llama-3-8b --layers 4 --output /tmp/l8x4.gguf >> $L 2>&1
C() { tag=$1; t=$2; shift 2; echo "== check $tag: $*" >> $L
  timeout -s KILL $t /tmp/decode_check38 --device cuda --mode resident "$@" > $OUT/check_$tag.txt 2>>$L; echo "rc $? (check $tag)" >> $L
  echo "check $tag: prompt logits diff $(grep '^| 0 |' $OUT/check_$tag.txt | cut -d'|' -f3) ; $(tail -1 $OUT/check_$tag.txt)" >> $OUT/table.txt; }
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench38 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l)
    print('%-16s %-6s %8.2f tok/s  peak %6.0f MiB  sum %s' % ('$tag', d['test'], d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))" >> $OUT/table.txt; }
C q4 120 --model /tmp/q4.gguf --context 1024 -p 512 -n 8
C q14 150 --model /tmp/q14.gguf --context 1024 -p 512 -n 8
C l8x4 60 --model /tmp/l8x4.gguf --context 1024 -p 300 -n 8
for m in q4 q14; do
  CARDINFER_DECODE=plain B ${m}_plain 150 --model /tmp/$m.gguf -p 512 -n 0 -r 5 --mode resident --context 1024
  B ${m}_fused 150 --model /tmp/$m.gguf -p 512 -n 128 -r 5 --mode resident --context 1024
done
CARDINFER_DECODE=plain B q14_6g_plain 150 --model /tmp/q14.gguf -p 512 -n 0 -r 3 --mode auto --vram-budget 6GiB --context 1024
B q14_6g_fused 150 --model /tmp/q14.gguf -p 512 -n 32 -r 3 --mode auto --vram-budget 6GiB --context 1024
B q4_500 120 --model /tmp/q4.gguf -p 512 -n 32 -r 3 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
grep -E "rc |rror|panic" $L | head -20
cat $OUT/table.txt
