#!/usr/bin/env bash
# Issue 7, session 10: the CPU computes the streamed head's last row chunks (commit
# 84fe8f4) on top of run74's faster exact twin and probe. exact_check; probe; 4B at
# 500 MiB: resident, hybrid search, fixed at the kept count and at 19, a timeline;
# 14B at 6 GiB: resident and hybrid search; generate 4B resident vs hybrid.
# At most 8 files under $OUT (more do not come back).
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe generate exact_check; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}75 && chmod +x /tmp/${b}75
done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
T=$OUT/table.txt
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name|L3") > $T 2>&1
timeout -s KILL 120 /tmp/exact_check75 2>&1 | tail -1 >> $T; echo "exact_check rc $?" >> $T
[ -f /tmp/q4.gguf ] || /tmp/synth75 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth75 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
timeout -s KILL 150 /tmp/probe75 --device cuda > $OUT/probe.txt 2>&1; grep -E "best|h2d, page" $OUT/probe.txt >> $T
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench75 --device cuda "$@" > /tmp/$tag.txt 2>>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -hE "plan:.*(head|hybrid)|device memory" /tmp/$tag.err | sed "s/^/    $tag /" >> $OUT/plans.txt
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-10s %6.2f tok/s (pred %5.2f) peak %4.0f MiB host %4.0f MB/tok host %5.2f s sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['host_secs'], d['generated_checksum']))
    if m.get('host_tuning'): print('    search: ' + m['host_tuning'])" >> $T; }
Q14="--model /tmp/q14.gguf -p 0 -n 40 -r 3 --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64"
NK() { grep -A1 "^$1 " $T | grep -oE "using [0-9]+" | grep -oE "[0-9]+"; }
B q4_res 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_tune 100 $Q4 --mode auto --hybrid
N=$(NK q4_tune); [ -n "$N" ] && { B q4_n$N 100 $Q4 --mode auto --hybrid --host-layers $N; }
B q4_n19 100 $Q4 --mode auto --hybrid --host-layers 19
B q4_tune2 100 $Q4 --mode auto --hybrid
CARDINFER_TIMELINE=2 timeout -s KILL 60 /tmp/bench75 --device cuda --model /tmp/q4.gguf -p 0 -n 6 -r 1 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto --hybrid --host-layers ${N:-17} 2>&1 >/dev/null | grep "^\[timeline\] 1 tokens" | tail -1 | tr '|' '\n' > $OUT/tl_q4.txt
B q14_res 150 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
B q14_tune 120 $Q14 --mode auto --hybrid
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
G() { tag=$1; model=$2; ctx=$3; shift 3; timeout -s KILL 100 /tmp/generate75 --device cuda --model $model --context $ctx --prompt-ids $IDS --max-tokens 48 --temperature 0 --json "$@" 2>> $L | tail -1 | python3 -c "
import json,sys
d=json.loads(sys.stdin.read()); g=d['generated_ids']; print('gen %-7s sum %d peak %s MiB prefill %.1f tok/s decode %.1f tok/s | %s' % ('$tag', sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['prefill_tok_s'], d['decode_tok_s'], d.get('host_tuning')))" >> $T 2>> $L; }
G q4res /tmp/q4.gguf 640 --mode resident
G q4hyb /tmp/q4.gguf 640 --mode auto --hybrid --vram-budget 500MiB --prefill-chunk 64
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head -20
cat $T; sort $OUT/plans.txt | uniq | head -30
