#!/usr/bin/env bash
# The CPU benchmark (issue 29): ours (`cardinfer bench --device cpu`) beside llama.cpp's
# `llama-bench`, both with the same threads on the same files, in turn, ROUNDS times; prints
# the median tok/s of each and the ratio as a markdown table.
#
#   LLAMA_BENCH=/path/to/llama-bench bash scripts/bench/cpu.sh MODEL.gguf [MODEL.gguf ...]
#   THREADS=2 ROUNDS=3 CARDINFER=target/release/cardinfer (defaults)
#
# llama-bench: a CPU build of llama.cpp (as vendored in PyPI llama-cpp-python==0.3.36,
# `cmake -B build -DGGML_CUDA=OFF -DGGML_NATIVE=ON && cmake --build build --target llama-bench`).
set -euo pipefail
threads=${THREADS:-2}; rounds=${ROUNDS:-3}
ours=${CARDINFER:-target/release/cardinfer}
llama=${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary}
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads; cardinfer $(git rev-parse --short HEAD); $(date -u +%Y-%m-%d)"
echo
echo "| file | ours pp128 / tg32 | llama.cpp pp128 / tg32 | ratio |"
echo "|---|---|---|---|"
for model in "$@"; do
  : > /tmp/cpu-bench-ours.txt; : > /tmp/cpu-bench-llama.txt
  for _ in $(seq "$rounds"); do
    "$ours" bench -m "$model" --device cpu -t "$threads" -p 128 -n 32 -r 3 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    if l.startswith("{"):
        r = json.loads(l); print(r["test"], r["tok_s"])' >> /tmp/cpu-bench-ours.txt
    "$llama" -m "$model" -t "$threads" -p 128 -n 32 -r 3 -o jsonl 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    if l.startswith("{"):
        r = json.loads(l); print("pp128" if r["n_gen"] == 0 else "tg32", r["avg_ts"])' >> /tmp/cpu-bench-llama.txt
  done
  get() { grep "^$2 " "$1" | cut -d' ' -f2 | median; }
  opp=$(get /tmp/cpu-bench-ours.txt pp128); otg=$(get /tmp/cpu-bench-ours.txt tg32)
  lpp=$(get /tmp/cpu-bench-llama.txt pp128); ltg=$(get /tmp/cpu-bench-llama.txt tg32)
  printf "| %s | %.1f / %.1f | %.1f / %.1f | %.2f / %.2f |\n" "$(basename "$model")" "$opp" "$otg" "$lpp" "$ltg" \
    "$(echo "$opp / $lpp" | bc -l)" "$(echo "$otg / $ltg" | bc -l)"
done
