#!/usr/bin/env bash
# Issue 7, session 15: the final binaries (bench127, 3369a22) on another loan: the 4B within
# 500 MiB, hybrid search x6 with llama.cpp's CUDA build at -ngl 0 (the anchor's
# configuration) twice between them; then the 14B at 6 GiB, hybrid search x2.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
mkdir -p /tmp/lib127 && cp .gpu/libgomp.so.1 /tmp/lib127/; LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/tmp/lib127"; export LD_LIBRARY_PATH
for b in bench127 probe90 synth90 llama-bench-cuda; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
LB() { echo "== llama-bench $*" >> $L
  ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done ) > /tmp/smi.txt 2>/dev/null & smi=$!
  timeout -s KILL 200 /tmp/llama-bench-cuda -m /tmp/q4.gguf "$@" > /tmp/lb.txt 2>> $L; kill $smi; cat /tmp/lb.txt >> $L
  peak=$(sort -n /tmp/smi.txt | tail -1)
  grep -E "tg[0-9]" /tmp/lb.txt | sed "s/^/llama.cpp CUDA $* (peak $peak MiB) /" >> $T; }
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench127 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-11s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
B q4_hybrid1 120 $Q4 -r 5 --hybrid
B q4_hybrid2 120 $Q4 -r 5 --hybrid
LB -p 0 -n 128 -t 16 -r 3 -ngl 0
B q4_hybrid3 120 $Q4 -r 5 --hybrid
B q4_hybrid4 120 $Q4 -r 5 --hybrid
LB -p 0 -n 128 -t 16 -r 3 -ngl 0
B q4_hybrid5 120 $Q4 -r 5 --hybrid
B q4_hybrid6 120 $Q4 -r 5 --hybrid
[ -f /tmp/q14.gguf ] || /tmp/synth90 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
Q14="--model /tmp/q14.gguf -p 0 -n 40 --vram-budget 6GiB --context 1024 --mode auto"
B q14_hybrid1 200 $Q14 -r 5 --hybrid
B q14_hybrid2 200 $Q14 -r 5 --hybrid
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
