#!/usr/bin/env bash
# Issue 7, session 11, the final binaries (commit 32ed494: host pool, thread search,
# host-bytes metric, 4-input CPU kernels): a second confirmation (run85 again on another loan, the 4B hybrid three times). Stage
# `both`: probe; the 4B at 500 MiB (resident, stream-only, hybrid search x2) and generate
# (resident vs hybrid ids, 48 tokens); the 14B at 6 GiB (resident, stream-only, search
# x1) and generate ids.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench probe synth generate; do [ -x /tmp/${b}85 ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/${b}85.xz /tmp/${b}85 && chmod +x /tmp/${b}85; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name"; date -u) > $T 2>&1
[ -f /tmp/probed85 ] || { timeout -s KILL 150 /tmp/probe85 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed85; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench85 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-11s %6.2f tok/s (pred %6.2f) peak %5.0f MiB host %4.0f MB/tok sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(40)))")
G() { tag=$1; model=$2; ctx=$3; n=$4; shift 4; echo "== gen $tag: $*" >> $L
  timeout -s KILL 150 /tmp/generate85 --device cuda --model $model --context $ctx --prompt-ids $IDS --max-tokens $n --temperature 0 --json "$@" 2>> $L | tail -1 | python3 -c "
import json,sys
d=json.loads(sys.stdin.read()); g=d['generated_ids']; print('gen %-9s %3d tokens sum %d peak %s MiB prefill %.1f tok/s decode %.2f tok/s | %s' % ('$tag', len(g), sum(i*(k+1) for k,i in enumerate(g)), (d['peak_device_bytes'] or 0)>>20, d['prefill_tok_s'], d['decode_tok_s'], d.get('host_tuning')))" >> $T 2>> $L; }
case both in
both)
  [ -f /tmp/q4.gguf ] || /tmp/synth85 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
  Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
  B q4_res 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
  B q4_stream 100 $Q4 -r 3
  for i in 1 2 3; do B q4_hybrid$i 120 $Q4 -r 5 --hybrid; done
  G q4res /tmp/q4.gguf 640 48 --mode resident
  G q4hyb /tmp/q4.gguf 640 48 --mode auto --hybrid --vram-budget 500MiB --prefill-chunk 64
  [ -f /tmp/q14.gguf ] || /tmp/synth85 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
  Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
  B q14_res 150 --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
  B q14_stream 150 $Q14 -r 3
  for i in 1; do B q14_hybrid$i 200 $Q14 -r 5 --hybrid; done
  G q14res /tmp/q14.gguf 1024 48 --mode resident
  G q14hyb /tmp/q14.gguf 1024 48 --mode auto --hybrid --vram-budget 6GiB ;;
esac
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
