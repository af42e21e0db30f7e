#!/usr/bin/env bash
# Issue 7, session 11, a fresh loan (probe first) (binaries of commit 12e92cc): Candle's barrier-pool spin
# limit (CANDLE_BARRIER_POOL_SPIN_LIMIT; default 25000) against threads, interleaved, 4B
# fixed 17 and search at 500 MiB; the 14B search at 6 GiB with the default and 200000.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench synth probe; do [ -x /tmp/${b}78 ] || { python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}78 && chmod +x /tmp/${b}78; }; done
[ -f /tmp/probed ] || { timeout -s KILL 150 /tmp/probe78 --device cuda 2>&1 | grep -E "best" >> $T; touch /tmp/probed; }
[ -f /tmp/q4.gguf ] || /tmp/synth78 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth78 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench78 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-16s %6.2f tok/s peak %4.0f MiB host %5.2f s sum %s %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_secs'], d['generated_checksum'], m.get('host_tuning') or ''))" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto --hybrid"
for i in 1 2; do
  for sl in 25000 200000 2000000; do CANDLE_BARRIER_POOL_SPIN_LIMIT=$sl RAYON_NUM_THREADS=14 B t14_s${sl}_$i 100 $Q4 --host-layers 17; done
  CANDLE_BARRIER_POOL_SPIN_LIMIT=200000 RAYON_NUM_THREADS=12 B t12_s200000_$i 100 $Q4 --host-layers 17
done
for sl in 25000 200000; do CANDLE_BARRIER_POOL_SPIN_LIMIT=$sl B search_s$sl 100 $Q4; done
Q14="--model /tmp/q14.gguf -p 0 -n 40 -r 3 --vram-budget 6GiB --context 1024 --mode auto --hybrid"
for sl in 25000 200000; do CANDLE_BARRIER_POOL_SPIN_LIMIT=$sl B q14_s$sl 150 $Q14; done
cat $T
