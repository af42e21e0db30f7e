#!/usr/bin/env bash
# Issue 7, session 12 (commit after 14e48df: the split watch also acts on 5 far slower
# steps, a try of the split ends after 2 far slower ones, retries after 64 steps).
# Stage `14b`: probe; the 14B at 6 GiB (resident, stream-only, hybrid search x2) and
# generate ids (resident vs hybrid). Stage `hog`: probe if fresh; the 4B at 500 MiB
# (stream-only, hybrid search x2), then a noisy neighbour (6 processes copying memory,
# from 9 s to 21 s) beside 590-token generations: hybrid search, fixed 17, stream-only.
set -uo pipefail
STAGE=${1:-4b}
L=$OUT/log-$STAGE.txt; T=$OUT/table-$STAGE.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench probe synth generate; do [ -x /tmp/${b}89 ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/${b}89.xz /tmp/${b}89 && chmod +x /tmp/${b}89; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name"; date -u) > $T 2>&1
[ -f /tmp/probed89 ] || { timeout -s KILL 150 /tmp/probe89 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed89; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench89 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-11s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
G() { tag=$1; model=$2; ctx=$3; n=$4; shift 4; echo "== gen $tag: $*" >> $L
  timeout -s KILL 150 /tmp/generate89 --device cuda --model $model --context $ctx --prompt-ids $IDS --max-tokens $n --temperature 0 --json "$@" 2>> $L | tail -1 > $OUT/gen-$tag.json
  python3 - $OUT/gen-$tag.json $tag >> $T 2>> $L <<'PYEOF'
import json,sys
d=json.load(open(sys.argv[1])); g=d['generated_ids']; ts=[d['load_secs'] + t for t in d.get('token_secs') or []]
print('gen %-9s %3d tokens sum %d peak %s MiB decode %.2f tok/s | %s' % (sys.argv[2], len(g), sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['decode_tok_s'], d.get('host_tuning')))
if len(ts) > 100:
    bins = {}
    for t in ts: bins[int(t // 2)] = bins.get(int(t // 2), 0) + 1
    print('    tok/s per 2 s since the process started: ' + ' '.join('%d-%ds %.1f' % (2*k, 2*k+2, v/2) for k,v in sorted(bins.items())))
PYEOF
}
HOGP=/opt/torch/.venv/bin/python3
H() { # a generation with 6 memory-copying processes from 9 s to 21 s after it starts
  tag=$1; shift; (sleep 9; for i in 1 2 3 4 5 6; do $HOGP .gpu/hog.py 12 & done; wait) & hog=$!
  G $tag /tmp/q4.gguf 640 590 "$@"; wait $hog; }
case $STAGE in
hog)
  [ -f /tmp/q4.gguf ] || /tmp/synth89 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
  Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
  B q4_stream 100 $Q4 -r 3
  for i in 1 2; do B q4_hybrid$i 120 $Q4 -r 5 --hybrid; done
  A="--mode auto --vram-budget 500MiB --prefill-chunk 64"
  H hog_hyb $A --hybrid
  H hog_fix17 $A --host-layers 17
  H hog_stream $A ;;
14b)
  [ -f /tmp/q14.gguf ] || /tmp/synth89 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
  Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
  B q14_res 150 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
  B q14_stream 150 $Q14 -r 3
  for i in 1 2; do B q14_hybrid$i 200 $Q14 -r 5 --hybrid; done
  G q14res /tmp/q14.gguf 1024 48 --mode resident
  G q14hyb /tmp/q14.gguf 1024 48 --mode auto --hybrid --vram-budget 6GiB ;;
esac
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
