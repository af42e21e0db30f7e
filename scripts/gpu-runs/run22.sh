#!/usr/bin/env bash
# Device timeline of a 14B prefill pass at 6 GiB; the custom_block example on CUDA (4B at 500 MiB).
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
for b in bench synth custom_block; do gzip -dc .gpu/$b.gz > /tmp/${b}22 && chmod +x /tmp/${b}22; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth22 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth22 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench22 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); t=d['metrics']
    print('%-14s %-6s %8.2f tok/s  pred %7.2f  peak %6.0f MiB  budget %6s  h2d %s  copy %.2fs compute %.2fs  sum %s' % ('$tag', d['test'], d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, (d['budget_bytes'] or 0)//2**20, t['h2d_gb_s'], t['copy_secs'], t['compute_secs'], d['generated_checksum']))" >> $OUT/table.txt; }
CARDINFER_TIMELINE=1 timeout -s KILL 150 /tmp/bench22 --device cuda --model /tmp/q14.gguf -p 512 -n 2 -r 1 --mode auto --vram-budget 6GiB --context 1024 > $OUT/tl14.txt 2> $OUT/tl14.err; echo "rc $? tl14" >> $L
CARDINFER_TIMELINE=1 timeout -s KILL 150 /tmp/bench22 --device cuda --model /tmp/q4.gguf -p 64 -n 2 -r 1 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64 > $OUT/tl4.txt 2> $OUT/tl4.err; echo "rc $? tl4" >> $L
timeout -s KILL 200 /tmp/custom_block22 --device cuda --model /tmp/q4.gguf --vram-budget 500MiB --context 640 --prefill-chunk 64 --tokens 16 > $OUT/custom.txt 2>> $L; echo "rc $? custom" >> $L
grep -E "rc |rror|panic" $L | head
cat $OUT/custom.txt
grep "512 tokens" $OUT/tl14.err | head -1 | tr '|' '\n' | head -70
grep "timeline\] 1 tokens" $OUT/tl14.err | tail -1 | tr '|' '\n' | tail -25
