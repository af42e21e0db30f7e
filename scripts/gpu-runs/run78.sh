#!/usr/bin/env bash
# Issue 7, session 11: where a 4B hybrid pass goes now (commit 12e92cc): the probe, then
# fixed 17 with CARDINFER_TIMELINE=1 (40 tokens: every pass's wall time) and =2 (12 tokens:
# every block), and fixed 17 at 10/12/14 threads. At most 8 files come back.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
for b in bench synth probe; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}78 && chmod +x /tmp/${b}78
done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name|L3|NUMA node0") > $T 2>&1
[ -f /tmp/q4.gguf ] || /tmp/synth78 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
timeout -s KILL 150 /tmp/probe78 --device cuda > $OUT/probe.txt 2>&1; grep -E "CPU|h2d, page|hop" $OUT/probe.txt >> $T
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench78 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -v timeline /tmp/$tag.err | tail -5 >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-10s %6.2f tok/s peak %4.0f MiB host %5.2f s sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_secs'], d['generated_checksum']))
    if m.get('host_tuning'): print('    search: ' + m['host_tuning'])" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 --vram-budget 500MiB --context 640 --prefill-chunk 64"
B q4_res 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_n17 100 $Q4 -n 40 -r 3 --mode auto --hybrid --host-layers 17
CARDINFER_TIMELINE=1 B q4_tl1 100 $Q4 -n 40 -r 2 --mode auto --hybrid --host-layers 17
grep timeline /tmp/q4_tl1.err > $OUT/tl1.txt
CARDINFER_TIMELINE=2 B q4_tl2 100 $Q4 -n 12 -r 1 --mode auto --hybrid --host-layers 17
grep timeline /tmp/q4_tl2.err > $OUT/tl2.txt
for th in 10 12 14; do RAYON_NUM_THREADS=$th B q4_n17_t$th 100 $Q4 -n 40 -r 3 --mode auto --hybrid --host-layers 17; done
B q4_search 100 $Q4 -n 40 -r 3 --mode auto --hybrid
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
python3 - $OUT/tl1.txt <<'PY' >> $T
import re,sys
w=[float(m.group(1)) for l in open(sys.argv[1]) for m in [re.search(r"1 tokens: .*wall ([0-9.]+) ms", l)] if m]
g=[float(m.group(1)) for l in open(sys.argv[1]) for m in [re.search(r"1 tokens: .*, ([0-9.]+) ms since", l)] if m]
w.sort(); g.sort()
if w: print("tl1 passes %d: wall min %.1f p25 %.1f med %.1f p75 %.1f p90 %.1f max %.1f; gap med %.2f max %.2f" % (len(w), w[0], w[len(w)//4], w[len(w)//2], w[3*len(w)//4], w[9*len(w)//10], w[-1], g[len(g)//2] if g else 0, g[-1] if g else 0))
PY
cat $T
