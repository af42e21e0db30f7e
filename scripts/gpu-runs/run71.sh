#!/usr/bin/env bash
# Issue 7, session 9: run70 (final binaries, commit b42c0d9) on the H200 kind: exact_check, resident /
# stream-only / hybrid (search, fixed) for 14B and 4B with the ids' checksums, and
# `generate` (40-token prompt in one pass, 48 greedy tokens) hybrid against resident.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe generate exact_check; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}71 && chmod +x /tmp/${b}71
done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name") > $OUT/cpu.txt 2>&1
timeout -s KILL 120 /tmp/exact_check71 > $OUT/exact_check.txt 2>&1; echo "exact_check rc $?" >> $OUT/exact_check.txt
[ -f /tmp/q4.gguf ] || /tmp/synth71 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth71 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/probe71 --device cuda > $OUT/probe.txt 2>&1; grep -E "CPU|h2d, page" $OUT/probe.txt >> $OUT/table.txt
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench71 --device cuda "$@" > $OUT/$tag.txt 2>>$OUT/$tag.err; echo "rc $? ($tag)" >> $L
  split=$(grep -m1 "hybrid:" $OUT/$tag.err | grep -oE "[0-9]+ of [0-9]+ streamed|simulated [0-9.]+ ms")
  grep '^{' $OUT/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-10s %6.2f tok/s (pred %5.2f) peak %4.0f MiB host %4.0f MB/tok hop %5.2f s host %5.2f s sum %s | %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['hop_wait_secs'], m['host_secs'], d['generated_checksum'], '''$split'''.replace(chr(10),' ')))
    if m.get('host_tuning'): print('    search: ' + m['host_tuning'])" >> $OUT/table.txt; }
Q14="--model /tmp/q14.gguf -p 0 -n 40 -r 3 --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64"
NK() { grep -A1 "^$1 " $OUT/table.txt | grep -oE "using [0-9]+" | grep -oE "[0-9]+"; }
B q4_res 120 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_str 120 $Q4 --mode auto
B q4_tune 120 $Q4 --mode auto --hybrid
N=$(NK q4_tune); [ -n "$N" ] && { B q4_n$N 120 $Q4 --mode auto --hybrid --host-layers $N; }
B q14_res 200 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
B q14_str 150 $Q14 --mode auto
B q14_tune 150 $Q14 --mode auto --hybrid
N=$(NK q14_tune); [ -n "$N" ] && { B q14_n$N 150 $Q14 --mode auto --hybrid --host-layers $N; }
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
G() { tag=$1; model=$2; ctx=$3; shift 3; timeout -s KILL 150 /tmp/generate71 --device cuda --model $model --context $ctx --prompt-ids $IDS --max-tokens 48 --temperature 0 --json "$@" 2>> $L | tail -1 | python3 -c "
import json,sys
d=json.loads(sys.stdin.read()); g=d['generated_ids']; print('gen %-7s ids[:8] %s sum %d peak %s MiB prefill %.1f tok/s decode %.1f tok/s | %s' % ('$tag', g[:8], sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['prefill_tok_s'], d['decode_tok_s'], d.get('host_tuning')))" >> $OUT/table.txt 2>> $L; }
G q4res /tmp/q4.gguf 640 --mode resident
G q4hyb /tmp/q4.gguf 640 --mode auto --hybrid --vram-budget 500MiB --prefill-chunk 64
G q14res /tmp/q14.gguf 1024 --mode resident
G q14hyb /tmp/q14.gguf 1024 --mode auto --hybrid --vram-budget 6GiB
cat $OUT/q*.err | grep -E "device memory|decode path|plan:|host layers:" | sort | uniq -c > $OUT/mem.txt; grep -h -iE "error|panic" $OUT/q*.err | head -20 >> $L; rm -f $OUT/q*.err $OUT/q*.txt
grep -E "rc [^0]|rror|panic" $L | head -20
cat $OUT/cpu.txt $OUT/exact_check.txt $OUT/table.txt
