#!/usr/bin/env bash
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
for b in bench probe synth; do gzip -dc .gpu/$b.gz > /tmp/${b}9 && chmod +x /tmp/${b}9; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> $L
[ -f /tmp/q4.gguf ] || /tmp/synth9 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth9 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
echo "== probe" >> $L
timeout -s KILL 180 /tmp/probe9 --device cuda --file /tmp/q14.gguf --output $OUT/profile.json > $OUT/probe.txt 2>>$L; echo "rc $? (probe)" >> $L
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench9 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^|' $OUT/$tag.txt | tail -n +3 | sed "s/^/$tag /" >> $OUT/table.md; }
B q4_500 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
B q4_1g 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 1GiB --context 640 --prefill-chunk 64
B q4_700 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 700MiB --context 640 --prefill-chunk 64
B q4_1500_c512 60 --model /tmp/q4.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 1500MiB --context 2048
B q14_6g 120 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 6GiB --context 1024
B q14_4g 120 --model /tmp/q14.gguf -p 512 -n 32 -r 2 --mode auto --vram-budget 4GiB --context 1024
for f in $OUT/q*.txt; do echo "$(basename $f) $(grep -o '"budget_bytes":[0-9]*' $f | tail -1) $(grep -o '"peak_device_bytes":[0-9]*' $f | tail -1) $(grep -o '"generated_checksum":[0-9]*' $f | tail -1)" >> $OUT/checks.txt; done
cat $OUT/checks.txt
cat $OUT/probe.txt; cat $OUT/table.md; grep -E "device memory|rc " $L
