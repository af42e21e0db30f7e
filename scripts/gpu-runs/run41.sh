#!/usr/bin/env bash
# Issue 7 data: hybrid decode with the host's wait for the device (hop_wait_secs) split from the CPU
# compute (host_secs), by slot count and thread count. run42.sh is the same after the RoPE tables
# were kept per device (its rows: q14 hybrid, q14 hybrid RAYON_NUM_THREADS=8, q14 stream, q4 hybrid,
# q4 stream, q4 hybrid with 8 threads).
set -uo pipefail
L=$OUT/log.txt
for b in bench synth; do gzip -dc .gpu/$b.gz > /tmp/${b}41 && chmod +x /tmp/${b}41; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth41 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth41 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; timeout -s KILL $t /tmp/bench41 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; }
B q14_hyb_s2 150 --model /tmp/q14.gguf -p 0 -n 32 -r 1 --mode auto --vram-budget 6GiB --context 1024 --hybrid
B q14_hyb_s4 150 --model /tmp/q14.gguf -p 0 -n 32 -r 1 --mode auto --vram-budget 6GiB --context 1024 --hybrid --slots 4
B q14_str_s2 150 --model /tmp/q14.gguf -p 0 -n 32 -r 1 --mode auto --vram-budget 6GiB --context 1024
B q4_hyb_s2 150 --model /tmp/q4.gguf -p 0 -n 32 -r 1 --mode auto --vram-budget 500MiB --context 640 --hybrid
B q4_hyb_s3 150 --model /tmp/q4.gguf -p 0 -n 32 -r 1 --mode auto --vram-budget 500MiB --context 640 --hybrid --slots 3
RAYON_NUM_THREADS=8 B q4_hyb_t8 150 --model /tmp/q4.gguf -p 0 -n 32 -r 1 --mode auto --vram-budget 500MiB --context 640 --hybrid
