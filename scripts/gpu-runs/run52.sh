#!/usr/bin/env bash
# Issue 7: host layers' matrix-vector products on the file's blocks (cpu_matvec) instead of
# Candle's repacked tiles; A/B in one run (CARDINFER_CPU_MATVEC=candle); the 4B's hybrid
# plan with a smaller prefill chunk (head resident).
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe; do gzip -dc .gpu/$b.gz > /tmp/${b}52 && chmod +x /tmp/${b}52; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
lscpu | grep -E "Model name|^CPU\(s\)|Thread|L3|Flags" | cut -c1-200 > $OUT/cpu.txt
grep -o -w -E "avx2|avx512f|avx512_vnni|avx_vnni|amx_int8" /proc/cpuinfo | sort -u | tr '\n' ' ' >> $OUT/cpu.txt
[ -f /tmp/q4.gguf ] || /tmp/synth52 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth52 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
echo "CPU block GB/s (probe --cpu-block-only): threads ours candle" >> $OUT/table.txt
for t in 8 12 14 16; do
  a=$(RAYON_NUM_THREADS=$t /tmp/probe52 --cpu-block-only 2>>$L); b=$(CARDINFER_CPU_MATVEC=candle RAYON_NUM_THREADS=$t /tmp/probe52 --cpu-block-only 2>>$L)
  printf "  %2d  %6.1f  %6.1f\n" $t $a $b >> $OUT/table.txt; done
/tmp/probe52 --device cuda > $OUT/probe.txt 2>&1; grep -E "CPU|hop|overhead|h2d" $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench52 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  path=$(grep -m1 "decode path" $OUT/$tag.err | cut -c14-40); split=$(grep -m1 "hybrid:" $OUT/$tag.err | grep -oE "[0-9]+ of [0-9]+ streamed|simulated [0-9.]+ ms"); thr=$(grep -m1 "CPU threads" $OUT/$tag.err | grep -oE "[0-9]+")
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-14s %6.2f tok/s (pred %5.2f) peak %5.0f MiB host %4.0f MB hop %5.2f s host %5.2f s sum %s | thr %s | %s | %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['hop_wait_secs'], m['host_secs'], d['generated_checksum'], '${RAYON_NUM_THREADS:-$thr}', '$path', '''$split'''.replace(chr(10),' ')))" >> $OUT/table.txt; }
Q14="--model /tmp/q14.gguf -p 0 -n 32 -r 3 --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf -p 0 -n 32 -r 3 --vram-budget 500MiB --context 640"
B q14_str 150 $Q14 --mode auto
B q14_hyb 150 $Q14 --mode auto --hybrid
B q14_h11 150 $Q14 --mode auto --host-layers 11
B q14_h13 150 $Q14 --mode auto --host-layers 13
CARDINFER_CPU_MATVEC=candle RAYON_NUM_THREADS=14 B q14_h9_candle 150 $Q14 --mode auto --host-layers 9
B q4_hyb 120 $Q4 --mode auto --hybrid
B q4_hyb_c64 120 $Q4 --mode auto --hybrid --prefill-chunk 64
CARDINFER_CPU_MATVEC=candle RAYON_NUM_THREADS=12 B q4_hyb_candle 120 $Q4 --mode auto --hybrid
cat $OUT/*.err | grep -E "device memory|decode path|plan:" > $OUT/mem.txt; rm -f $OUT/*.err $OUT/q*.txt
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/cpu.txt; cat $OUT/table.txt
