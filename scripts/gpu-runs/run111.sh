#!/usr/bin/env bash
# Issue 7, session 14: the hidden state's hop through mapped host memory (kernels, no copy
# engine) and the device layers' launches recorded as graphs. In turn, fixed host-layer
# counts: the session-13 binary (*104), the new one with layer graphs off
# (CARDINFER_LAYER_GRAPHS=0: the hop alone), and the new one as built (*111).
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench104 bench111 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
# B tag timeout binary [env...] -- bench args
B() { tag=$1; t=$2; bin=$3; shift 3; envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  echo "== $tag: $bin ${envs[*]} $*" >> $L
  env "${envs[@]}" timeout -s KILL $t /tmp/$bin --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  cp /tmp/$tag.err $OUT/$tag.err
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-14s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
B q4_res 100 bench111 X=1 -- --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
for r in 1 2 3; do
  B q4_old18_$r 100 bench104 X=1 -- $Q4 -r 3 --hybrid --host-layers 18
  B q4_hop18_$r 100 bench111 CARDINFER_LAYER_GRAPHS=0 -- $Q4 -r 3 --hybrid --host-layers 18
  B q4_new18_$r 100 bench111 X=1 -- $Q4 -r 3 --hybrid --host-layers 18
done
B q4_tl 100 bench111 CARDINFER_TIMELINE=2 -- $Q4 -r 1 --hybrid --host-layers 18
for r in 1 2; do
  B q4_oldsearch$r 120 bench104 X=1 -- $Q4 -r 5 --hybrid
  B q4_newsearch$r 120 bench111 X=1 -- $Q4 -r 5 --hybrid
done
[ -f /tmp/q14.gguf ] || /tmp/synth90 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
B q14_res 150 bench111 X=1 -- --model /tmp/q14.gguf -p 0 -n 40 -r 3 --context 1024 --mode resident
for r in 1 2; do
  B q14_old$r 150 bench104 X=1 -- $Q14 -r 3 --hybrid
  B q14_new$r 150 bench111 X=1 -- $Q14 -r 3 --hybrid
done
grep -h -iE "error|panic" /tmp/*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
