#!/usr/bin/env bash
# A short coverage-guided fuzz run of every fuzz target (what CI runs after the tests):
# each target starts from its kept corpus (fuzz/corpus/<target>, left unchanged: new
# inputs go to a temporary directory) and runs for FUZZ_SECONDS (default 20). A crash,
# panic, timeout or out-of-memory fails the script and leaves the input in
# fuzz/artifacts/<target>/. No sanitizer: the code fuzzed is safe Rust, and an
# uninstrumented build is what fits in CI's time. Long runs: fuzz/README.md.
#
#   scripts/fuzz-smoke.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf hf_config safetensors gguf_tokenizer chat_template)
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz 0.13.2 ..." >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo fuzz passes nightly-only compiler flags; RUSTC_BOOTSTRAP lets a stable toolchain
# accept them.
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O -s none
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  echo "fuzzing $target for ${seconds}s ..." >&2
  if ! cargo fuzz run -O -s none "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    >"$work/$target.log" 2>&1; then
    tail -n 40 "$work/$target.log" >&2
    echo "fuzz target $target failed: the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units" "$work/$target.log" >&2 || true
done
