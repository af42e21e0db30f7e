#!/usr/bin/env bash
# Check after the fused-ops launch refactor (prompt logits identical, speed), then issue 7 data:
# hybrid decode metrics (host/copy/compute seconds) and Candle's CPU GEMV rate by thread count
# (cpubench: a throwaway program timing QMatMul::forward of a 17408×5120 Q4_K / Q6_K matrix on one
# token; its 50 MB matrix stays in the GPU machine's 300 MiB L3, so it reads as cache speed).
set -uo pipefail
L=$OUT/log.txt
for b in bench synth decode_check cpubench; do gzip -dc .gpu/$b.gz > /tmp/${b}40 && chmod +x /tmp/${b}40; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth40 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth40 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
for t in 16 8 4; do echo "cpubench RAYON_NUM_THREADS=$t: $(RAYON_NUM_THREADS=$t /tmp/cpubench40 | tr '\n' ' ')" >> $OUT/table.txt; done
/tmp/decode_check40 --device cuda --mode resident --model /tmp/q4.gguf --context 1024 -p 512 -n 8 > $OUT/check_q4.txt 2>>$L
B() { tag=$1; t=$2; shift 2; timeout -s KILL $t /tmp/bench40 --device cuda "$@" > $OUT/$tag.txt 2>>$L; }
B q4_res 150 --model /tmp/q4.gguf -p 512 -n 128 -r 3 --mode resident --context 1024
B q14_6g 150 --model /tmp/q14.gguf -p 16 -n 32 -r 1 --mode auto --vram-budget 6GiB --context 1024
B q14_6g_hyb 150 --model /tmp/q14.gguf -p 16 -n 32 -r 1 --mode auto --vram-budget 6GiB --context 1024 --hybrid
B q4_500 150 --model /tmp/q4.gguf -p 16 -n 32 -r 1 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
B q4_500_hyb 150 --model /tmp/q4.gguf -p 16 -n 32 -r 1 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64 --hybrid
