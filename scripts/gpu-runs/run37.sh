#!/usr/bin/env bash
# Issue 4: what a prefill layer's ops cost (op_cost --seq 512), per-token overhead of the fused decode
# (full token vs the matrix products alone, CARDINFER_FUSED_MATVEC_ONLY=1), prefill timeline.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth op_cost; do gzip -dc .gpu/$b.gz > /tmp/${b}37 && chmod +x /tmp/${b}37; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> $OUT/table.txt
[ -f /tmp/q4.gguf ] || /tmp/synth37 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth37 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/op_cost37 --device cuda --seq 512 --context 512 --calls 50 > $OUT/op_cost_seq512.txt 2>>$L
/tmp/op_cost37 --device cuda --seq 1 --context 512 --calls 2000 > $OUT/op_cost_seq1.txt 2>>$L
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench37 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l)
    print('%-16s %-6s %8.2f tok/s  %7.3f ms/token  peak %6.0f MiB' % ('$tag', d['test'], d['tok_s'], 1000/d['tok_s'], (d['peak_device_bytes'] or 0)/2**20))" >> $OUT/table.txt; }
for m in q4 q14; do
  B ${m}_graph 150 --model /tmp/$m.gguf -p 0 -n 128 -r 3 --mode resident --context 1024
  CARDINFER_FUSED_MATVEC_ONLY=1 B ${m}_matvecs 150 --model /tmp/$m.gguf -p 0 -n 128 -r 3 --mode resident --context 1024
  CARDINFER_FUSED_MATVEC_ONLY=1 CARDINFER_GRAPH=0 B ${m}_matvecs_nograph 150 --model /tmp/$m.gguf -p 0 -n 128 -r 3 --mode resident --context 1024
done
grep -E "rc |rror|panic" $L | head -20
cat $OUT/table.txt
cat $OUT/op_cost_seq512.txt
