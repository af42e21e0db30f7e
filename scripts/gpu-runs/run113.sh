#!/usr/bin/env bash
# Issue 7, session 14: the CPU kernels' software prefetch distance on the GPU machine's CPU
# (CARDINFER_PREFETCH_BYTES; 2048 is the built-in, tuned on a development machine).
# cpu_kernels at 14 threads (weights from 512 MiB) per distance, then fixed 18 host layers
# of the 4B at 500 MiB in turn per distance.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench113 cpuk113 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u; lscpu | grep -E "Model name|NUMA|MHz|L2|L3|Thread|Socket") > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
for pf in 1024 2048 4096 8192 16384; do
  CARDINFER_PREFETCH_BYTES=$pf RAYON_NUM_THREADS=14 timeout -s KILL 60 /tmp/cpuk113 --mib 512 --reps 7 > $OUT/cpuk_$pf.txt 2>&1
  echo "pf $pf: $(grep -E '^\| Q[46]K' $OUT/cpuk_$pf.txt | tr '\n' ' ')" >> $T
done
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
for r in 1 2 3; do for pf in 2048 4096 8192; do tag=pf${pf}_$r
  CARDINFER_PREFETCH_BYTES=$pf timeout -s KILL 100 /tmp/bench113 --device cuda $Q4 -r 3 --hybrid --host-layers 18 > /tmp/$tag.txt 2>/tmp/$tag.err
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); print('%-10s %6.2f tok/s peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))" >> $T
done; done
cat $T
