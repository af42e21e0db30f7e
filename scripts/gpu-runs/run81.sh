#!/usr/bin/env bash
# Issue 7, session 11: the host pool (our own spinning pool, its thread count set at run
# time) and the tuner's thread search (commit after 12e92cc), against the binaries of
# 12e92cc (Candle's barrier pool, threads fixed by the probe), interleaved on one loan.
# 4B at 500 MiB, 14B at 6 GiB, each with resident and stream-only rows. At most 8 files.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench78 synth78 bench81 probe81 generate81; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b
done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name") > $T 2>&1
/tmp/synth78 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
/tmp/synth78 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
timeout -s KILL 150 /tmp/probe81 --device cuda > $OUT/probe.txt 2>&1; grep -E "best|h2d, page" $OUT/probe.txt >> $T
B() { tag=$1; bin=$2; t=$3; shift 3; echo "== $tag ($bin): $*" >> $L
  timeout -s KILL $t /tmp/$bin --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-12s %6.2f tok/s peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
B q4_res bench81 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_stream bench81 100 $Q4 -r 3
for i in 1 2; do
  B q4_new$i bench81 120 $Q4 -r 5 --hybrid
  B q4_old$i bench78 120 $Q4 -r 5 --hybrid
done
B q4_new3 bench81 120 $Q4 -r 5 --hybrid
B q4_n17_new bench81 100 $Q4 -r 3 --hybrid --host-layers 17
B q4_n17_old bench78 100 $Q4 -r 3 --hybrid --host-layers 17
B q14_res bench81 150 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
B q14_stream bench81 150 $Q14 -r 3
B q14_new1 bench81 200 $Q14 -r 5 --hybrid
B q14_old1 bench78 200 $Q14 -r 5 --hybrid
B q14_new2 bench81 200 $Q14 -r 5 --hybrid
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
cat $T
