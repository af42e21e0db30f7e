#!/usr/bin/env bash
# Benchmark harness, step 2 of 2 — on the GPU machine, from the repository root, after
# scripts/bench/prepare.sh filled .gpu/bench/ (nvcc, cmake and ninja needed there; cargo
# and network are not). Builds llama.cpp (once per machine), writes the synthetic models
# with our `synth`, runs every row of ROWS (default scripts/bench/readme.rows) — both
# engines in turn, peak device memory sampled with nvidia-smi every 0.2 s — and writes
#   RESULTS/results.jsonl   one JSON object per row (engine, model, args, tok/s, peak MiB of
#                           the whole process by nvidia-smi, ours also as its own allocations
#                           by cuMemGetInfo, our generated-id checksum, device, commit, date)
#   RESULTS/table.md        the markdown table of scripts/bench/table.py
# RESULTS is $OUT when set (the device tool's output folder), else .gpu/bench/results.
#
#   bash scripts/bench/run.sh [ROWS]
#   BENCH_CLAIMS='qwen3-4b' bash scripts/bench/run.sh      # only the claims this regex matches
#   BENCH_ROLES='ours|resident' bash scripts/bench/run.sh   # only the roles this regex matches
#   BENCH_PREPARE_ONLY=1 bash scripts/bench/run.sh ROWS      # build llama.cpp, write ROWS' models
# (a machine whose commands are limited to 10 minutes runs the claims in two calls; the
# llama.cpp build and the models stay in BENCH_WORK between them, and table.py takes
# both calls' results.jsonl).
set -uo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-scripts/bench/readme.rows}
pack=.gpu/bench
results=${OUT:-$pack/results}
work=${BENCH_WORK:-/tmp/cardinfer-bench}
mkdir -p "$results" "$work"
log=$results/log.txt
: > "$results/results.jsonl"

source scripts/bench/env.sh

ours=$work/cardinfer
gzip -dc "$pack/cardinfer.gz" > "$ours" && chmod +x "$ours"
if ldd "$ours" | grep -q "not found"; then ldd "$ours" | grep "not found"; exit 127; fi
commit=$(tr '\n' ' ' < "$pack/commit" | sed 's/ *$//')
device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
date=$(date -u +%Y-%m-%d)
echo "device: $device, $(nproc) CPU threads; cardinfer $commit; $date" | tee -a "$log"

# llama.cpp, built once per machine (about 4.5 minutes on 16 cores) while models are written.
llama=$work/llama.cpp/build/bin/llama-bench
# BENCH_NO_LLAMA=1: our rows only (a loan too short for the llama.cpp build; such rows make
# no ratio, and table.py shows none).
if [ ! -x "$llama" ] && [ -z "${BENCH_NO_LLAMA:-}" ]; then
  ( rm -rf "$work/llama.cpp" && tar -xJf "$pack/llama.cpp.tar.xz" -C "$work" && cd "$work/llama.cpp" &&
    cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF \
      -DLLAMA_OPENSSL=OFF > "$work/llama-build.log" 2>&1 &&
    cmake --build build --target llama-bench -j"$(nproc)" >> "$work/llama-build.log" 2>&1 ) &
  building=$!
fi

# The synthetic models the rows name (`synth` presets: real architectures, random Q4_K_M
# blocks; PRESET+hotN: a mixture of experts with N hot experts per layer, `synth --hot-experts N`).
# PRESET~L: the preset with only its first L layers (`synth --layers L`, the same seed: the
# same embedding), e.g. a draft model named in ARGS as `--draft gemma3-12b~2`.
presets=$(grep -v '^#' "$rows" | grep -E "${BENCH_CLAIMS:-.}" |
  awk -F'|' 'NF>=4 {gsub(/ /,"",$3); print $3; if (match($4, /--draft [^ ]+/)) print substr($4, RSTART + 8, RLENGTH - 8)}' | sort -u)
for preset in $presets; do
  model=$work/$preset.gguf
  extra=()
  [[ "$preset" != *+hot* ]] || extra=(--hot-experts "${preset##*+hot}")
  [[ "$preset" != *~* ]] || extra=(--layers "${preset##*~}")
  base=${preset%%+hot*}; base=${base%%~*}
  [ -f "$model" ] || "$ours" synth --preset "$base" "${extra[@]}" --output "$model" >> "$log" 2>&1 ||
    { echo "synth $preset failed (see $log)"; exit 1; }
done
if [ -n "${building:-}" ]; then
  wait "$building" || { tail -20 "$work/llama-build.log"; echo "llama.cpp build failed"; exit 1; }
fi
# BENCH_PREPARE_ONLY=1: build llama.cpp and write the models, run nothing (a later call on
# the same machine runs the rows).
[ -z "${BENCH_PREPARE_ONLY:-}" ] || { echo "prepared: llama.cpp and the models in $work"; exit 0; }

# Peak device memory of one command: nvidia-smi every 0.2 s, minus the idle baseline.
baseline=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
sampled() {
  ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; sleep 0.2; done ) \
    > "$work/smi.txt" 2>/dev/null &
  local smi=$!
  "$@"
  local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  local most
  most=$(sort -n "$work/smi.txt" | tail -1)
  peak=$(( ${most:-$baseline} - baseline ))
  return $rc
}

# One row: CLAIM | ROLE | PRESET | ARGS (ROLE: ours, resident, llama.cpp).
n=0
while IFS='|' read -r claim role preset args; do
  [[ "$claim" =~ ^[[:space:]]*(#|$) ]] && continue   # comments (xargs would trip on their quotes)
  claim=$(echo "$claim" | xargs); role=$(echo "$role" | xargs); preset=$(echo "$preset" | xargs)
  [[ "$claim" =~ ${BENCH_CLAIMS:-.} ]] || continue
  [[ "$role" =~ ${BENCH_ROLES:-.} ]] || continue
  n=$((n + 1)); model=$work/$preset.gguf; out=$work/row$n.txt
  args=$(echo "$args" | sed -E "s#--draft ([^ ]+)#--draft $work/\1.gguf#")
  echo "== row $n: $claim / $role: $args" >> "$log"
  if [ "$role" = "llama.cpp" ] && [ -n "${BENCH_NO_LLAMA:-}" ]; then
    n=$((n - 1)); continue
  fi
  if [ "$role" = "llama.cpp" ]; then
    # shellcheck disable=SC2086
    sampled timeout -s KILL 300 "$llama" -m "$model" $args -o jsonl < /dev/null > "$out" 2>> "$log"; rc=$?
    read -r tok_s pp_tok_s < <(python3 -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
tg=[r["avg_ts"] for r in rows if r.get("n_gen",0)>0]
pp=[r["avg_ts"] for r in rows if r.get("n_prompt",0)>0 and r.get("n_gen",0)==0]
print(tg[-1] if tg else "null", pp[-1] if pp else "null")' "$out")
    checksum=null; own=null; speculation=null
  else
    # shellcheck disable=SC2086
    sampled timeout -s KILL 300 "$ours" bench -m "$model" --device cuda $args < /dev/null > "$out" 2>> "$log"; rc=$?
    grep -v '^{' "$out" >> "$log"   # bench's tables (pass costs, expert cache) beside the row
    read -r tok_s pp_tok_s checksum own speculation < <(python3 -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
tg=[r for r in rows if r["test"].startswith("tg")]
pp=[r for r in rows if r["test"].startswith("pp")]
own=max((r["peak_device_bytes"] or 0 for r in rows), default=None)
spec=[r for r in tg if "speculation" in r]
plain=[r for r in tg if "speculation" not in r]
kept=json.dumps({"plain_tok_s": plain[-1]["tok_s"] if plain else None, "acceptance_rate": spec[-1]["acceptance_rate"],
                 "tokens_per_pass": spec[-1]["tokens_per_pass"], "ids_equal_plain": spec[-1]["ids_equal_plain"],
                 "pass_secs": spec[-1]["pass_secs"]}, separators=(",", ":")) if spec else "null"
print(tg[-1]["tok_s"] if tg else "null", pp[-1]["tok_s"] if pp else "null",
      tg[-1]["generated_checksum"] if tg else "null", "null" if not own else round(own / 2**20), kept)' "$out")
  fi
  python3 - "$results/results.jsonl" <<PY
import json, sys
null, true, false = None, True, False
row = {"claim": """$claim""", "role": "$role", "preset": "$preset", "args": """$args""".strip(),
       "tok_s": $tok_s, "pp_tok_s": $pp_tok_s, "peak_mib": $peak, "own_peak_mib": $own, "checksum": $checksum, "speculation": $speculation, "rc": $rc,
       "device": """$device""", "commit": "$commit", "date": "$date"}
open(sys.argv[1], "a").write(json.dumps(row) + "\n")
print("%-32s %-9s decode %8s  prefill %8s tok/s  peak %6s MiB  rc %s" % (row["claim"], row["role"], row["tok_s"], row["pp_tok_s"], row["peak_mib"], row["rc"]))
PY
done < "$rows"
python3 scripts/bench/table.py "$results/results.jsonl" > "$results/table.md"
cat "$results/table.md"
