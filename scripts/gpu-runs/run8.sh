#!/usr/bin/env bash
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
gzip -dc .gpu/bench.gz > /tmp/bench8 && chmod +x /tmp/bench8
gzip -dc .gpu/synth.gz > /tmp/synth8 && chmod +x /tmp/synth8
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> $L
[ -f /tmp/q4.gguf ] || /tmp/synth8 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth8 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench8 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^|' $OUT/$tag.txt | tail -n +3 | sed "s/^/$tag /" >> $OUT/table.md
  echo "$tag $(grep -o '"generated_checksum":[0-9]*' $OUT/$tag.txt | tail -1) $(grep -o '"slots":[0-9]*' $OUT/$tag.txt | tail -1) $(grep -o '"h2d_gb_s":[0-9.]*' $OUT/$tag.txt | tail -1)" >> $OUT/checks.txt; }
B q14_auto_6g_planner 120 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 6GiB --context 1024
B q14_auto_6g_s2 120 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 6GiB --context 1024 --slots 2
B q4_auto_500_planner 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
B q4_auto_1g_planner 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 1GiB --context 640 --prefill-chunk 64
cat $OUT/table.md; cat $OUT/checks.txt; tail -12 $L
