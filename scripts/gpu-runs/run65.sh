#!/usr/bin/env bash
# Issue 7, session 8: run64 without the Candle-kernel A/B rows, on the H100 kind (run64
# got an H200): resident / stream-only / hybrid (search, fixed) for 14B and 4B, and the
# hybrid generate against the resident ids.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe generate; do gzip -dc .gpu/$b.gz > /tmp/${b}65 && chmod +x /tmp/${b}65; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
(nproc; cat /sys/fs/cgroup/cpu.max 2>/dev/null; grep -E "^(MemTotal|Hugepagesize)" /proc/meminfo) > $OUT/cpu.txt 2>&1
[ -f /tmp/q4.gguf ] || /tmp/synth65 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth65 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/probe65 --device cuda > $OUT/probe.txt 2>&1; grep -E "CPU|h2d, page" $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench65 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  split=$(grep -m1 "hybrid:" $OUT/$tag.err | grep -oE "[0-9]+ of [0-9]+ streamed|simulated [0-9.]+ ms")
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-10s %6.2f tok/s (pred %5.2f) peak %4.0f MiB host %4.0f MB/tok hop %5.2f s host %5.2f s h2d %s sum %s | %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['hop_wait_secs'], m['host_secs'], m['h2d_gb_s'], d['generated_checksum'], '''$split'''.replace(chr(10),' ')))
    if m.get('host_tuning'): print('    search: ' + m['host_tuning'])" >> $OUT/table.txt; }
T() { tag=$1; shift; CARDINFER_TIMELINE=2 timeout -s KILL 120 /tmp/bench65 --device cuda "$@" -p 0 -n 10 -r 1 2>&1 >/dev/null | grep "^\[timeline\] 1 tokens" | tail -2 > $OUT/tl_$tag.txt; }
Q14="--model /tmp/q14.gguf -p 0 -n 40 -r 3 --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64"
C() { export CARDINFER_CPU_KERNEL=candle; B "$@"; unset CARDINFER_CPU_KERNEL; }
N14() { grep -A1 "^$1 " $OUT/table.txt | grep -oE "using [0-9]+" | grep -oE "[0-9]+"; }
B q14_res 200 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
B q14_str 150 $Q14 --mode auto
B q14_tune 150 $Q14 --mode auto --hybrid
N=$(N14 q14_tune); [ -n "$N" ] && { B q14_n$N 150 $Q14 --mode auto --hybrid --host-layers $N; }
B q4_res 120 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_str 120 $Q4 --mode auto
B q4_tune 120 $Q4 --mode auto --hybrid
N=$(N14 q4_tune); [ -n "$N" ] && { B q4_n$N 120 $Q4 --mode auto --hybrid --host-layers $N; }
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
G() { tag=$1; shift; timeout -s KILL 120 /tmp/generate65 --device cuda --model /tmp/q4.gguf --context 640 --prompt-ids $IDS --max-tokens 48 --temperature 0 --json "$@" 2>> $L | tail -1 | python3 -c "
import json,sys
d=json.loads(sys.stdin.read()); g=d['generated_ids']; print('gen %-4s ids[:8] %s sum %d peak %s MiB prefill %.1f tok/s decode %.1f tok/s | %s' % ('$tag', g[:8], sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['prefill_tok_s'], d['decode_tok_s'], d.get('host_tuning')))" >> $OUT/table.txt 2>> $L; }
G res --mode resident
G hyb --mode auto --hybrid --vram-budget 500MiB --prefill-chunk 16
cat $OUT/q*.err | grep -E "device memory|decode path|plan:|host layers:" | sort | uniq -c > $OUT/mem.txt; rm -f $OUT/q*.err $OUT/q*.txt
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/cpu.txt $OUT/table.txt
