#!/usr/bin/env bash
# The GPU benchmark of BENCHMARKS.md, run on the GPU machine from the repository root with
# `.gpu/` holding bench.gz (release build, --features cuda), synth_gguf.py and the gguf wheel
# (see ../shared/gpu/README.md). Every run is under a hard timeout; results go to $OUT.
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
gzip -dc .gpu/bench.gz > /tmp/bench2 && chmod +x /tmp/bench2
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
pkill -9 -f /tmp/bench 2>/dev/null; sleep 1
pip install -q --no-deps --target /tmp/site .gpu/gguf-*.whl >/dev/null 2>&1; export PYTHONPATH=/tmp/site
[ -f /tmp/q4.gguf ] || python3 .gpu/synth_gguf.py --preset qwen3-4b --out /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || python3 .gpu/synth_gguf.py --preset qwen3-14b --out /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench2 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^|' $OUT/$tag.txt | tail -n +3 >> $OUT/table.md
  echo "$tag $(grep -o '"generated_checksum":[0-9]*' $OUT/$tag.txt | tail -1) $(grep -o '"h2d_gb_s":[0-9.]*' $OUT/$tag.txt | tail -1) $(grep -o '"pinned_bytes":[0-9]*' $OUT/$tag.txt | tail -1)" >> $OUT/checks.txt; }

B q4_resident 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode resident --context 1024
B q14_resident 90 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode resident --context 1024
B q4_stream_1500 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode stream --vram-budget 1500MiB --context 1024
B q4_auto_500 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
B q4_auto_700 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 700MiB --context 640 --prefill-chunk 64
B q14_auto_6g 120 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 6GiB --context 1024
B q14_auto_6g_s3 120 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 6GiB --context 1024 --slots 3
[ -f /tmp/q8.gguf ] || python3 .gpu/synth_gguf.py --preset qwen3-8b --out /tmp/q8.gguf >> $L 2>&1
B q8_auto_6g 120 --model /tmp/q8.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 6GiB --context 1024
B q8_resident 90 --model /tmp/q8.gguf -p 512 -n 32 -r 2 --mode resident --context 1024
B q14_stream_6g 120 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode stream --vram-budget 6GiB --context 1024
cat $OUT/table.md; cat $OUT/checks.txt; grep -v "^\[compute\]\|^\[prefetch\]" $L | tail -25; 
