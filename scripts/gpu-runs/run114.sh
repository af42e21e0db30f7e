#!/usr/bin/env bash
# Issue 7, session 14: is the host layers' in-pass slowdown the copies' memory traffic?
# The 4B file's own layers alone on the CPU (host_layer --model, 14 threads), then the
# timeline of fixed 18 host layers (copies beside the CPU) against 35 (every streamed layer
# on the CPU: only the head's chunks copy), same binary (*113).
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench113 hostl114 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
for pf in 2048 8192; do
  CARDINFER_PREFETCH_BYTES=$pf RAYON_NUM_THREADS=14 timeout -s KILL 100 /tmp/hostl114 --model /tmp/q4.gguf --layers 16 --steps 8 > $OUT/hostl_$pf.txt 2>&1
  echo "alone, file layers, pf $pf: $(grep exact $OUT/hostl_$pf.txt | tr '\n' ' ')" >> $T
  CARDINFER_PREFETCH_BYTES=$pf RAYON_NUM_THREADS=14 timeout -s KILL 100 /tmp/hostl114 --steps 8 > $OUT/hostlz_$pf.txt 2>&1
  echo "alone, zero Q4_K layers, pf $pf: $(grep exact $OUT/hostlz_$pf.txt | tr '\n' ' ')" >> $T
done
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
for n in 18 35 18 35; do
  CARDINFER_TIMELINE=2 timeout -s KILL 100 /tmp/bench113 --device cuda $Q4 -r 1 --hybrid --host-layers $n > /tmp/tl$n.txt 2> /tmp/tl$n.err
  echo "fixed $n: $(python3 .gpu/tlsum.py /tmp/tl$n.err) $(grep '^{' /tmp/tl$n.txt | grep tg | python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); print(round(d["tok_s"],2), "tok/s sum", d["generated_checksum"])')" >> $T
  cp /tmp/tl$n.err $OUT/tl$n.err
done
cat $T
