#!/usr/bin/env bash
# Issue 7, session 11, on a fresh loan (run78's had gone back) (same binaries, commit 12e92cc): fixed 17 at
# 10/12/14 threads with CARDINFER_TIMELINE=2 (12 tokens) and =1 (40 tokens), and at 14
# threads with Candle's barrier-pool spin limit at 2000 and 200000 (default 25000).
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench synth probe; do [ -x /tmp/${b}78 ] || { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}78 && chmod +x /tmp/${b}78; }; done
[ -f /tmp/q4.gguf ] || /tmp/synth78 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader) >> $T 2>&1
timeout -s KILL 150 /tmp/probe78 --device cuda 2>&1 | grep -E "CPU|h2d, page|hop" >> $T
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench78 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-10s %6.2f tok/s peak %4.0f MiB host %5.2f s sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_secs'], d['generated_checksum']))" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto --hybrid --host-layers 17"
for th in 10 12 14; do
  RAYON_NUM_THREADS=$th CARDINFER_TIMELINE=2 B tl2_t$th 100 $Q4 -n 12 -r 1; grep timeline /tmp/tl2_t$th.err > $OUT/tl2_t$th.txt
  RAYON_NUM_THREADS=$th CARDINFER_TIMELINE=1 B tl1_t$th 100 $Q4 -n 40 -r 2; grep timeline /tmp/tl1_t$th.err > $OUT/tl1_t$th.txt
done
for sl in 2000 200000; do CANDLE_BARRIER_POOL_SPIN_LIMIT=$sl RAYON_NUM_THREADS=14 B t14_spin$sl 100 $Q4 -n 40 -r 3; done
RAYON_NUM_THREADS=12 B t12_again 100 $Q4 -n 40 -r 3
RAYON_NUM_THREADS=14 B t14_again 100 $Q4 -n 40 -r 3
cat $T
