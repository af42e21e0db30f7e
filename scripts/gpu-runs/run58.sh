#!/usr/bin/env bash
# Issue 7: a host layer's small ops (norms, RoPE, softmax) on a one-thread pool; A/B of
# one CPU layer in isolation (scratch_layer = examples/host_layer.rs with positional
# arguments: serial small ops or Candle's Rayon), then
# resident, stream-only and hybrid in one run.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe scratch_layer; do gzip -dc .gpu/$b.gz > /tmp/${b}58 && chmod +x /tmp/${b}58; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
(nproc; cat /sys/fs/cgroup/cpu.max 2>/dev/null; grep -E "^(MemTotal|Hugepagesize)" /proc/meminfo; cat /sys/kernel/mm/transparent_hugepage/enabled) > $OUT/cpu.txt 2>&1
[ -f /tmp/q4.gguf ] || /tmp/synth58 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth58 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
for t in 8 14; do RAYON_NUM_THREADS=$t /tmp/scratch_layer58 2560 9728 32 | tail -2; RAYON_NUM_THREADS=$t /tmp/scratch_layer58 5120 17408 40 | tail -2; done | sed "s/^/layer: /" >> $OUT/table.txt
/tmp/probe58 --device cuda > $OUT/probe.txt 2>&1; grep -E "CPU|hop|h2d" $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench58 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  split=$(grep -m1 "hybrid:" $OUT/$tag.err | grep -oE "[0-9]+ of [0-9]+ streamed|simulated [0-9.]+ ms"); thr=$(grep -m1 "CPU threads" $OUT/$tag.err | grep -oE "[0-9]+")
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-12s %6.2f tok/s (pred %5.2f) peak %5.0f MiB host %4.0f MB hop %5.2f s host %5.2f s h2d %s sum %s | thr %s | %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['hop_wait_secs'], m['host_secs'], m['h2d_gb_s'], d['generated_checksum'], '${RAYON_NUM_THREADS:-$thr}', '''$split'''.replace(chr(10),' ')))" >> $OUT/table.txt; }
T() { tag=$1; shift; CARDINFER_TIMELINE=2 timeout -s KILL 120 /tmp/bench58 --device cuda "$@" -p 0 -n 10 -r 1 2>&1 >/dev/null | grep "^\[timeline\] 1 tokens" | tail -2 > $OUT/tl_$tag.txt; }
Q14="--model /tmp/q14.gguf -p 0 -n 32 -r 3 --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf -p 0 -n 32 -r 3 --vram-budget 500MiB --context 640"
B q14_res 200 --model /tmp/q14.gguf -p 0 -n 32 -r 3 --context 1024 --mode resident
B q14_str 150 $Q14 --mode auto
B q14_hyb 150 $Q14 --mode auto --hybrid
B q14_hyb2 150 $Q14 --mode auto --hybrid
T q14_hyb --model /tmp/q14.gguf --vram-budget 6GiB --context 1024 --mode auto --hybrid
B q4_res 120 --model /tmp/q4.gguf -p 0 -n 32 -r 3 --context 640 --mode resident
B q4_str 120 $Q4 --mode auto
B q4_hyb_c64 120 $Q4 --mode auto --hybrid --prefill-chunk 64
B q4_hyb_c64b 120 $Q4 --mode auto --hybrid --prefill-chunk 64
T q4_c64 --model /tmp/q4.gguf --vram-budget 500MiB --context 640 --mode auto --hybrid --prefill-chunk 64
cat $OUT/q*.err | grep -E "device memory|decode path|plan:" | sort | uniq -c > $OUT/mem.txt; rm -f $OUT/q*.err $OUT/q*.txt
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/cpu.txt $OUT/table.txt
