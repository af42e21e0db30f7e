#!/usr/bin/env bash
# The soak benchmark on the GPU machine (issue 24): `cardinfer-dev soak` — N generations in
# one process, then N chat turns in one session — with RSS and device memory sampled, on a
# synthetic model written here. Needs .gpu/bench/cardinfer-dev.gz (prepare.sh with
# BENCH_DEV=1) beside cardinfer.gz. Writes the table to RESULTS/soak.md ($OUT or .gpu/bench/results).
#
#   bash scripts/bench/soak.sh [PRESET] [GENERATIONS] [TURNS] [-- soak args]
#                                          (default: qwen3-0.6b 1000 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
preset=qwen3-0.6b; n=1000; turns=1000
[ $# -eq 0 ] || [ "$1" = "--" ] || { preset=$1; shift; }
[ $# -eq 0 ] || [ "$1" = "--" ] || { n=$1; shift; }
[ $# -eq 0 ] || [ "$1" = "--" ] || { turns=$1; shift; }
[ "${1:-}" != "--" ] || shift
pack=.gpu/bench
results=${OUT:-$pack/results}
work=${BENCH_WORK:-/tmp/cardinfer-bench}
mkdir -p "$results" "$work"
source scripts/bench/env.sh
for bin in cardinfer cardinfer-dev; do gzip -dc "$pack/$bin.gz" > "$work/$bin" && chmod +x "$work/$bin"; done
model=$work/$preset.gguf
[ -f "$model" ] || "$work/cardinfer" synth --preset "$preset" --output "$model" >&2
{
  echo "soak: $preset (synthetic), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)," \
    "cardinfer $(tr '\n' ' ' < "$pack/commit"), $(date -u +%Y-%m-%d)"
  echo "command: cardinfer-dev soak -m $preset.gguf --device cuda -n $n --turns $turns $*"
  "$work/cardinfer-dev" soak -m "$model" --device cuda -n "$n" --turns "$turns" "$@"
} | tee "$results/soak.md"
