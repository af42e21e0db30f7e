#!/usr/bin/env bash
# A long fuzz run of one target on every core (the 10-million-execution runs of
# fuzz/README.md): JOBS libFuzzer processes (default: one per core), each running its share
# of RUNS executions from the kept corpus with its own seed. New inputs go to
# OUTDIR/corpus (minimize them into fuzz/corpus/TARGET with -merge=1 before keeping them),
# crashes to OUTDIR/artifacts; each process's log to OUTDIR/logs.
#
#   scripts/fuzz-long.sh TARGET [RUNS] [OUTDIR]
#   FUZZ_BIN=path/to/built/TARGET scripts/fuzz-long.sh ...   (a fuzzer built elsewhere)
#   FUZZ_MAX_SECONDS=N                                         (stop each process after N s)
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1; runs=${2:-10000000}; out=${3:-fuzz/runs/$target}
jobs=${JOBS:-$(nproc)}
bin=${FUZZ_BIN:-}
if [ -z "$bin" ]; then
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -O -s none "$target")
  bin=fuzz/target/x86_64-unknown-linux-gnu/release/$target
fi
mkdir -p "$out/corpus" "$out/artifacts" "$out/logs"
per=$(( (runs + jobs - 1) / jobs ))
start=$(date +%s)
pids=()
for j in $(seq 1 "$jobs"); do
  "$bin" "$out/corpus" "fuzz/corpus/$target" -runs="$per" -seed="$j" -max_len=8192 -rss_limit_mb=2048 \
    -timeout=20 -max_total_time="${FUZZ_MAX_SECONDS:-0}" -artifact_prefix="$out/artifacts/" \
    -print_final_stats=1 > "$out/logs/job$j.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
secs=$(( $(date +%s) - start ))
total=$(cat "$out"/logs/*.log | awk '/^stat::number_of_executed_units/ {s += $2} END {print s + 0}')
echo "$target: $total executions in ${secs} s on $jobs processes; findings: $(ls "$out/artifacts" | wc -l)"
exit "$failed"
