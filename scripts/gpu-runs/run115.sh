#!/usr/bin/env bash
# Issue 7, session 14, part 1: the 4B against llama.cpp on the same loan, the final code
# (the library of 0ff702a, unchanged since; bench104). llama.cpp from the PyPI sdist
# llama-cpp-python==0.3.36 built CPU-only (as run105): its decode with every layer on the
# CPU is the anchor's `-ngl 0` row. Ours in the same call: resident, stream-only, hybrid
# search x5 at 500 MiB.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
mkdir -p /tmp/lib115 && cp .gpu/libgomp.so.1 /tmp/lib115/; LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/tmp/lib115"; export LD_LIBRARY_PATH
for b in bench104 probe90 synth90 llama-bench; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u; ldd /tmp/llama-bench | grep -i "not found") > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
LB() { echo "== llama-bench $*" >> $L; timeout -s KILL 150 /tmp/llama-bench -m /tmp/q4.gguf "$@" > /tmp/lb.txt 2>> $L; cat /tmp/lb.txt >> $L
  grep -E "tg[0-9]" /tmp/lb.txt | sed "s/^/llama.cpp CPU $* /" >> $T; }
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench104 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-11s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
LB -p 0 -n 128 -t 16 -r 3
B q4_res 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
B q4_stream 100 $Q4 -r 3
B q4_hybrid1 120 $Q4 -r 5 --hybrid
B q4_hybrid2 120 $Q4 -r 5 --hybrid
LB -p 0 -n 128 -t 14 -r 3
B q4_hybrid3 120 $Q4 -r 5 --hybrid
B q4_hybrid4 120 $Q4 -r 5 --hybrid
B q4_hybrid5 120 $Q4 -r 5 --hybrid
LB -p 0 -n 128 -t 16 -r 3
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
