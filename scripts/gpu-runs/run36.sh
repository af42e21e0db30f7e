#!/usr/bin/env bash
# Issue 4: the real SmolLM2-135M Q4_1 (98 MB, over the 64 MiB a call may carry) is split in three
# (`split -n 3 -d SmolLM2-135M-Instruct.Q4_1.gguf smol.part`) and carried in three calls to the
# same warm machine; the third call reassembles it, checks its sha256, feeds llama.cpp's greedy
# continuations (../shared/reference/llamacpp/greedy.json) to the plain and fused paths
# (decode_check --feed-text), then repeats the synthetic checks and the resident speed runs.
#
# call 1 (.gpu: smol.part00, decode_check.gz):
#   cp .gpu/smol.part00 /tmp/; gzip -dc .gpu/decode_check.gz > /tmp/decode_check36; chmod +x /tmp/decode_check36
# call 2 (.gpu: smol.part01, bench.gz):
#   cp .gpu/smol.part01 /tmp/; gzip -dc .gpu/bench.gz > /tmp/bench36; chmod +x /tmp/bench36
# call 3 (.gpu: smol.part02, synth.gz, greedy.json, feed.py = run36-feed.py): the script below.
set -uo pipefail
export RUST_BACKTRACE=1
L=$OUT/log.txt
gzip -dc .gpu/synth.gz > /tmp/synth36 && chmod +x /tmp/synth36
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> $OUT/table.txt
cat /tmp/smol.part00 /tmp/smol.part01 .gpu/smol.part02 > /tmp/smol.gguf
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/smol.gguf" | sha256sum -c >> $OUT/table.txt
python3 .gpu/feed.py >> $OUT/table.txt
/tmp/synth36 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
/tmp/synth36 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/synth36 --preset llama-3-8b --layers 4 --output /tmp/l8x4.gguf >> $L 2>&1
C() { tag=$1; t=$2; shift 2; echo "== check $tag: $*" >> $L
  timeout -s KILL $t /tmp/decode_check36 --device cuda --mode resident "$@" > $OUT/check_$tag.txt 2>>$L; echo "rc $? (check $tag)" >> $L
  echo "check $tag: $(tail -1 $OUT/check_$tag.txt)" >> $OUT/table.txt; }
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench36 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); t=d['metrics']
    print('%-16s %-6s %8.2f tok/s  peak %6.0f MiB  sum %s' % ('$tag', d['test'], d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))" >> $OUT/table.txt; }
C smol 60 --model /tmp/smol.gguf -p 5 -n 40
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
