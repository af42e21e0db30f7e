#!/usr/bin/env bash
# Issue 7, session 12, the final binaries (b20f513, *94): the neighbour (6 processes
# copying memory, 9 s to 21 s) beside 590-token generations of the 4B at 500 MiB: the
# search (with the split watch), stream-only, fixed 17.
set -uo pipefail
STAGE=${1:-4b}
L=$OUT/log-$STAGE.txt; T=$OUT/table-$STAGE.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench94 generate94 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
B() { tag=$1; bin=$2; t=$3; shift 3; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/$bin --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-12s %6.2f tok/s peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
G() { tag=$1; bin=$2; shift 2; echo "== gen $tag: $*" >> $L
  timeout -s KILL 120 /tmp/$bin --device cuda --model /tmp/q4.gguf --context 640 --prompt-ids $IDS --max-tokens 590 --temperature 0 --json "$@" 2>> $L | tail -1 > $OUT/gen-$tag.json
  python3 - $OUT/gen-$tag.json $tag >> $T 2>> $L <<'PYEOF'
import json,sys
d=json.load(open(sys.argv[1])); g=d['generated_ids']; ts=[d['load_secs'] + t for t in d.get('token_secs') or []]
print('gen %-12s %3d tokens sum %d peak %s MiB decode %.2f tok/s | %s' % (sys.argv[2], len(g), sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['decode_tok_s'], d.get('host_tuning')))
iv=sorted((b-a)*1e3 for a,b in zip(ts,ts[1:]) if 12<=a<20); pre=sorted((b-a)*1e3 for a,b in zip(ts,ts[1:]) if 4<=a<8)
print('    median ms/token 4-8 s %.1f, 12-20 s (neighbour) %.1f' % (pre[len(pre)//2], iv[len(iv)//2]))
PYEOF
}
HOGP=/opt/torch/.venv/bin/python3
H() { tag=$1; shift; (sleep 9; for i in 1 2 3 4 5 6; do $HOGP .gpu/hog.py 12 & done; wait) & hog=$!
  G $tag "$@"; wait $hog; }
case $STAGE in
4b)
  [ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
  A="--mode auto --vram-budget 500MiB --prefill-chunk 64"
  H hog_hyb generate94 $A --hybrid
  H hog_stream generate94 $A
  H hog_fix17 generate94 $A --host-layers 17 ;;
esac
grep -h -iE "error|panic" /tmp/*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
