#!/usr/bin/env bash
# Issue 7, session 12 (commit 90ad442: the attention twin grouped by KV head and chunk).
# Stage `4b`: probe; the 4B at 500 MiB: 590-token greedy generations (resident; fixed 17
# host layers with the previous attention, generate89 = 4decdeb, and with the new one;
# the search), then bench: resident, stream-only, hybrid search x2. Stage `14b`: probe if
# fresh; the 14B at 6 GiB: resident, stream-only, hybrid search x2, generate ids.
set -uo pipefail
STAGE=${1:-4b}
L=$OUT/log-$STAGE.txt; T=$OUT/table-$STAGE.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench90 probe90 synth90 generate90 generate89; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench90 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-11s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
G() { tag=$1; bin=$2; model=$3; ctx=$4; n=$5; shift 5; echo "== gen $tag: $*" >> $L
  timeout -s KILL 150 /tmp/$bin --device cuda --model $model --context $ctx --prompt-ids $IDS --max-tokens $n --temperature 0 --json "$@" 2>> $L | tail -1 > $OUT/gen-$tag.json
  python3 - $OUT/gen-$tag.json $tag >> $T 2>> $L <<'PYEOF'
import json,sys
d=json.load(open(sys.argv[1])); g=d['generated_ids']; ts=d.get('token_secs') or []
print('gen %-10s %3d tokens sum %d peak %s MiB decode %.2f tok/s | %s' % (sys.argv[2], len(g), sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['decode_tok_s'], d.get('host_tuning')))
if len(ts) > 500:
    iv=[(b-a)*1e3 for a,b in zip(ts,ts[1:])]
    med=lambda xs: sorted(xs)[len(xs)//2]
    print('    ms per token (median) at positions ' + ', '.join('%d-%d: %.2f' % (40+a, 40+b, med(iv[a:b])) for a,b in ((60,120),(200,260),(400,460),(520,580))))
PYEOF
}
case $STAGE in
4b)
  [ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
  A="--mode auto --vram-budget 500MiB --prefill-chunk 64"
  G res590 generate90 /tmp/q4.gguf 640 590 --mode resident
  G fix17_old generate89 /tmp/q4.gguf 640 590 $A --host-layers 17
  G fix17_new generate90 /tmp/q4.gguf 640 590 $A --host-layers 17
  G hyb_new generate90 /tmp/q4.gguf 640 590 $A --hybrid
  Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
  B q4_res 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
  B q4_stream 100 $Q4 -r 3
  for i in 1 2; do B q4_hybrid$i 120 $Q4 -r 5 --hybrid; done ;;
14b)
  [ -f /tmp/q14.gguf ] || /tmp/synth90 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
  Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
  B q14_res 150 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
  B q14_stream 150 $Q14 -r 3
  for i in 1 2; do B q14_hybrid$i 200 $Q14 -r 5 --hybrid; done
  G q14res generate90 /tmp/q14.gguf 1024 48 --mode resident
  G q14hyb generate90 /tmp/q14.gguf 1024 48 --mode auto --hybrid --vram-budget 6GiB ;;
esac
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
