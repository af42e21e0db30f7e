#!/usr/bin/env bash
# A short coverage-guided fuzz run of every fuzz target (what CI runs after the tests):
# each target starts from its kept corpus (fuzz/corpus/<target>, left unchanged: new
# inputs go to a temporary directory) and runs for FUZZ_SECONDS (default 15). A crash,
# panic, timeout or out-of-memory fails the script and leaves the input in
# fuzz/artifacts/<target>/. The targets are built as `cargo fuzz build --dev -s none`
# builds them (libFuzzer's coverage instrumentation, no sanitizer: the code fuzzed is safe
# Rust, and an unoptimized uninstrumented build is what fits in CI's time), without
# needing cargo-fuzz installed. Long runs: fuzz/README.md.
#
#   scripts/fuzz-smoke.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-15}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf hf_config safetensors gguf_tokenizer chat_template)
# The flags cargo-fuzz 0.13 passes (`cargo fuzz build --dev -s none`); they need a nightly
# compiler, which RUSTC_BOOTSTRAP stands in for on a stable toolchain.
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-target/smoke}"
target_triple=$(rustc -vV | awk '/^host:/ {print $2}')
echo "building the fuzz targets ..." >&2
cargo build --manifest-path Cargo.toml --target "$target_triple" --bins >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p artifacts
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "artifacts/$target"
  echo "fuzzing $target for ${seconds}s ..." >&2
  if ! "$CARGO_TARGET_DIR/$target_triple/debug/$target" "$work/$target" "corpus/$target" \
    -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" >"$work/$target.log" 2>&1; then
    tail -n 40 "$work/$target.log" >&2
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units" "$work/$target.log" >&2 || true
done
