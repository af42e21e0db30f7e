#!/usr/bin/env bash
# Check after the review refactors: pinned and disk tiers, 4B and 14B, ids against the resident runs.
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
for b in bench synth; do gzip -dc .gpu/$b.gz > /tmp/${b}32 && chmod +x /tmp/${b}32; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth32 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth32 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench32 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); t=d['metrics']
    print('%-14s %-6s %8.2f tok/s  pred %7.2f  peak %6.0f MiB  budget %6s  h2d %s  copy %.2fs compute %.2fs  sum %s' % ('$tag', d['test'], d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, (d['budget_bytes'] or 0)//2**20, t['h2d_gb_s'], t['copy_secs'], t['compute_secs'], d['generated_checksum']))" >> $OUT/table.txt; }
B q4_500 150 --model /tmp/q4.gguf -p 512 -n 64 -r 3 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
B q14_6g 150 --model /tmp/q14.gguf -p 512 -n 64 -r 3 --mode auto --vram-budget 6GiB --context 1024
B q14_6g_disk 150 --model /tmp/q14.gguf -p 512 -n 16 -r 1 --mode auto --vram-budget 6GiB --context 1024 --host-tier disk
grep -E "rc |rror|panic" $L | head
cat $OUT/table.txt
