#!/usr/bin/env bash
# Issue 7, session 10: where a 4B hybrid pass (19 host layers, 500 MiB) spends its time,
# on the commit f3d15c3 binaries (not yet run on a GPU): exact_check, the CPU kernels'
# rates at 14 threads (cpu_matvec and the exact twin), a host layer alone, the plan and
# device memory lines, resident vs hybrid ids, and a full timeline of decode passes.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe exact_check host_layer cpu_kernels; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}73 && chmod +x /tmp/${b}73
done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name|Thread|Core|Socket|NUMA node|L3"; cat /sys/kernel/mm/transparent_hugepage/enabled) > $OUT/cpu.txt 2>&1
timeout -s KILL 120 /tmp/exact_check73 > $OUT/exact_check.txt 2>&1; echo "exact_check rc $?" >> $OUT/exact_check.txt
RAYON_NUM_THREADS=14 timeout -s KILL 60 /tmp/cpu_kernels73 --mib 1024 > $OUT/cpu_kernels.txt 2>&1
RAYON_NUM_THREADS=14 timeout -s KILL 60 /tmp/host_layer73 --hidden 2560 --intermediate 9728 --heads 32 --steps 24 2>&1 | grep "round [12]" > $OUT/host_layer.txt
[ -f /tmp/q4.gguf ] || /tmp/synth73 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
/tmp/probe73 --device cuda > $OUT/probe.txt 2>&1; grep -E "CPU|h2d, page" $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench73 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-10s %6.2f tok/s (pred %5.2f) peak %4.0f MiB host %4.0f MB/tok hop %5.2f s host %5.2f s sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['hop_wait_secs'], m['host_secs'], d['generated_checksum']))
    if m.get('host_tuning'): print('    search: ' + m['host_tuning'])" >> $OUT/table.txt; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64"
B q4_res 120 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_n19 120 $Q4 --mode auto --hybrid --host-layers 19
B q4_tune 120 $Q4 --mode auto --hybrid
CARDINFER_TIMELINE=2 timeout -s KILL 120 /tmp/bench73 --device cuda --model /tmp/q4.gguf -p 0 -n 8 -r 1 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto --hybrid --host-layers 19 2>$OUT/tl_full.err >/dev/null
grep "^\[timeline\] 1 tokens" $OUT/tl_full.err | tail -3 > $OUT/tl_q4.txt
grep -vh "^\[timeline\]" $OUT/tl_full.err | head -60 > $OUT/plan_q4.txt; rm -f $OUT/tl_full.err
grep -h -iE "error|panic" $OUT/q*.err | head -20 >> $L; rm -f $OUT/q*.err $OUT/q*.txt
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/cpu.txt $OUT/exact_check.txt $OUT/cpu_kernels.txt $OUT/host_layer.txt $OUT/table.txt
