#!/usr/bin/env bash
# Issue 7, session 14: the final binaries (bench119, built at cd833e1) on another loan:
# 4B at 500 MiB resident, stream-only, hybrid search x6; 14B at 6 GiB resident,
# stream-only, hybrid search x2; generate 48 tokens hybrid vs resident for both.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench119 generate119 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench119 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-11s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
B q4_res 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_stream 100 $Q4 -r 3
for i in 1 2 3 4 5 6; do B q4_hybrid$i 120 $Q4 -r 5 --hybrid; done
[ -f /tmp/q14.gguf ] || /tmp/synth90 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
B q14_res 150 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
B q14_stream 150 $Q14 -r 3
for i in 1 2; do B q14_hybrid$i 200 $Q14 -r 5 --hybrid; done
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
for m in q4:640:500MiB q14:1024:6GiB; do IFS=: read f c b <<< "$m"
  for mode in resident hybrid; do
    a=$([ $mode = hybrid ] && echo "--mode auto --vram-budget $b --prefill-chunk 64 --hybrid" || echo "--mode resident")
    timeout -s KILL 150 /tmp/generate119 --device cuda --model /tmp/$f.gguf --context $c --prompt-ids $IDS --max-tokens 48 --temperature 0 --json $a 2>> $L | tail -1 > /tmp/gen-$f-$mode.json
    python3 -c "
import json,sys; d=json.load(open(sys.argv[1])); g=d['generated_ids']
print('gen %-14s %d tokens sum %d peak %s MiB %.2f tok/s' % (sys.argv[2], len(g), sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['decode_tok_s']))" /tmp/gen-$f-$mode.json $f-$mode >> $T 2>>$L
  done
done
grep -h -iE "error|panic" /tmp/*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
