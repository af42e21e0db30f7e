#!/usr/bin/env bash
# Issue 7, session 15: the 14B at 6 GiB with host layers' serial steps vectorized
# (bench122, 986d3e6) against the code before (bench121), in turn; and 48 generated tokens
# (40-token prompt) hybrid against resident for both models, with generate122.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench121 bench122 generate122 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth90 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; n=$2; shift 2; echo "== $tag $n: $*" >> $L
  timeout -s KILL 200 /tmp/bench$n --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-9s %s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', '$n', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
for n in 122 121 122; do B q14_search $n $Q14 -r 5 --hybrid; done
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
for m in q4:640:500MiB q14:1024:6GiB; do IFS=: read f c b <<< "$m"
  for mode in resident hybrid; do
    a=$([ $mode = hybrid ] && echo "--mode auto --vram-budget $b --prefill-chunk 64 --hybrid" || echo "--mode resident")
    timeout -s KILL 150 /tmp/generate122 --device cuda --model /tmp/$f.gguf --context $c --prompt-ids $IDS --max-tokens 48 --temperature 0 --json $a 2>> $L | tail -1 > /tmp/gen-$f-$mode.json
    python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); g=d['generated_ids']
print('gen %-14s %d tokens sum %d peak %s MiB %.2f tok/s' % (sys.argv[2], len(g), sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['decode_tok_s']))" /tmp/gen-$f-$mode.json $f-$mode >> $T 2>>$L
  done
done
grep -h -iE "error|panic" /tmp/*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
