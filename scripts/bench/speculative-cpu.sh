#!/usr/bin/env bash
# Speculative decoding on the CPU with a real pair (issue 26): `cardinfer run --json` of the
# target alone and with `--draft` (adaptive, and fixed drafts of 4 and 8), greedy and at
# temperature 0.7, in turn, ROUNDS times; prints the median decode tok/s of each variant, the
# draft's acceptance, tokens per target pass, and whether greedy ids equal the target's own.
#
#   bash scripts/bench/speculative-cpu.sh        # THREADS=2 ROUNDS=3 N=128 CARDINFER=target/release/cardinfer
#
# Models (scripts/fetch-model.sh): target qwen2.5-1.5b (Qwen2.5-Coder-1.5B-Instruct), draft
# qwen2.5-0.5b (Qwen2.5-Coder-0.5B-Instruct Q4_K_M), the same tokenizer.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${THREADS:-2}; rounds=${ROUNDS:-3}; n=${N:-128}
ours=${CARDINFER:-target/release/cardinfer}
target=$(bash scripts/fetch-model.sh qwen2.5-1.5b | tail -1)
draft=$(bash scripts/fetch-model.sh qwen2.5-0.5b | tail -1)
prompt="Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation, with a docstring and three doctests."
variants=("plain|" "draft adaptive|--draft $draft" "draft fixed 4|--draft $draft --draft-fixed --draft-max 4"
  "draft fixed 8|--draft $draft --draft-fixed --draft-max 8")
out=$(mktemp); trap 'rm -f "$out"' EXIT
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads; cardinfer $(git rev-parse --short HEAD); $(date -u +%Y-%m-%d)"
for _ in $(seq "$rounds"); do
  for temp in 0 0.7; do
    for v in "${variants[@]}"; do
      # shellcheck disable=SC2086
      "$ours" run -m "$target" ${v#*|} --device cpu -t "$threads" --chat -p "$prompt" -n "$n" \
        --temperature "$temp" --json 2>/dev/null | tail -1 |
        python3 -c 'import json,sys
r = json.loads(sys.stdin.read()); s = r.get("speculation") or {}
print(json.dumps({"variant": sys.argv[1], "temperature": float(sys.argv[2]), "tok_s": r["decode_tok_s"],
  "ids": r["generated_ids"], "passes": s.get("passes"), "drafted": s.get("drafted"), "accepted": s.get("accepted")}))' \
        "${v%%|*}" "$temp" >> "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| temperature | variant | decode tok/s (median) | kept / drafted | tokens per target pass | ids = target's |")
print("|---|---|---|---|---|---|")
for temp in (0.0, 0.7):
    plain = [r for r in rows if r["temperature"] == temp and r["variant"] == "plain"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["temperature"] == temp and r["variant"] == variant]
        if not rs:
            continue
        rate = statistics.median(r["tok_s"] for r in rs)
        if rs[0]["passes"]:
            kept, drafted, passes = (sum(r[k] for r in rs) for k in ("accepted", "drafted", "passes"))
            acc = "%d / %d (%.0f %%)" % (kept, drafted, 100 * kept / max(drafted, 1))
            tpp = "%.2f" % ((passes + kept) / passes)
        else:
            acc, tpp = "-", "1"
        same = "-" if temp else ("yes" if all(r["ids"] == plain[0]["ids"] for r in rs) else "NO")
        print("| %s | %s | %.2f | %s | %s | %s |" % (temp, variant, rate, acc, tpp, same))
PY
