#!/usr/bin/env bash
# Issue 7, session 13: does the bench harness's memory sample after every token cost time?
# (*110: --memory-every N.) The 4B at 500 MiB fixed 18 and resident, every token against
# every 40th, in turn (x3); CARDINFER_TIMELINE=1 once each for the gap between passes.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench110 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench110 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l)
    print('%-11s %6.2f tok/s peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))" >> $T
  grep "since the last pass" /tmp/$tag.err | python3 -c "
import re,sys,statistics as st
g=[float(m[1]) for m in (re.search(r'([\d.]+) ms since the last pass', l) for l in sys.stdin) if m]
g and print('    gap between passes: median %.2f ms over %d passes' % (st.median(g[2:] or g), len(g)))" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
R4="--model /tmp/q4.gguf -p 0 -n 40 --context 640 --mode resident"
for i in 1 2 3; do
  B f18_m1_$i 100 $Q4 -r 5 --hybrid --host-layers 18 --memory-every 1
  B f18_m40_$i 100 $Q4 -r 5 --hybrid --host-layers 18 --memory-every 40
  B res_m1_$i 100 $R4 -r 5 --memory-every 1
  B res_m40_$i 100 $R4 -r 5 --memory-every 40
done
CARDINFER_TIMELINE=1 B tl_f18_m1 100 $Q4 -r 1 --hybrid --host-layers 18 --memory-every 1
CARDINFER_TIMELINE=1 B tl_f18_m40 100 $Q4 -r 1 --hybrid --host-layers 18 --memory-every 40
grep -E "rc [^0]|rror|panic" $L | head
cat $T
