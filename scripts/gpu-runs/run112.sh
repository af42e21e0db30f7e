#!/usr/bin/env bash
# Issue 7, session 14: transparent huge pages for the host layers' weights. The machine's
# THP mode and glibc; then in turn, fixed 18 host layers with the session-13 binary (*104),
# as is and with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (malloc's large blocks advised
# MADV_HUGEPAGE), and AnonHugePages while a run is loaded.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
(cat /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag; ldd --version | head -1; grep -i huge /proc/meminfo | head -3) > $T 2>&1
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
row() { tag=$1; shift; env "$@" timeout -s KILL 100 /tmp/bench104 --device cuda $Q4 -r 3 --hybrid --host-layers 18 > /tmp/$tag.txt 2>/tmp/$tag.err &
  pid=$!; sleep 8; echo "$tag AnonHugePages during run: $(grep AnonHugePages /proc/meminfo)" >> $T; wait $pid
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); print('%-10s %6.2f tok/s peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))" >> $T; }
for r in 1 2 3; do row plain$r X=1; row thp$r GLIBC_TUNABLES=glibc.malloc.hugetlb=1; done
cat $T
