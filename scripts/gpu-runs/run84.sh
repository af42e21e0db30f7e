#!/usr/bin/env bash
# Issue 7, session 11 (binaries of 2c66f33): do huge pages for the host layers' weights
# help? The 4B at 500 MiB, fixed 18 host layers, interleaved with and without
# GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc asks for transparent huge pages on its
# mmap'd chunks, so the host layers' weights fault in on 2 MiB pages), 3 rows each.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench probe synth; do [ -x /tmp/${b}82 ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/${b}82.xz /tmp/${b}82 && chmod +x /tmp/${b}82; }; done
(cat /sys/kernel/mm/transparent_hugepage/enabled; uname -r; date -u) > $T 2>&1
[ -f /tmp/probed82 ] || { timeout -s KILL 150 /tmp/probe82 --device cuda > /dev/null 2>&1; touch /tmp/probed82; }
[ -f /tmp/q4.gguf ] || /tmp/synth82 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto --hybrid --host-layers 18"
row() { tag=$1; shift; ( "$@" /tmp/bench82 --device cuda $Q4 > /tmp/$tag.txt 2>/tmp/$tag.err & P=$!; sleep 12; grep AnonHugePages /proc/$P/smaps_rollup > /tmp/$tag.huge 2>/dev/null; wait $P )
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); print('%-8s %6.2f tok/s peak %4.0f MiB sum %s | %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum'], open('/tmp/$tag.huge').read().strip()))" >> $T; }
for i in 1 2 3; do
  row plain$i env
  row huge$i env GLIBC_TUNABLES=glibc.malloc.hugetlb=1
done
cat $T
