#!/usr/bin/env bash
# Decode overhead after splitting and merging heads without copy kernels for one token (run27 is the before).
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
for b in bench synth; do gzip -dc .gpu/$b.gz > /tmp/${b}28 && chmod +x /tmp/${b}28; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth28 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth28 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
T() { tag=$1; shift; CARDINFER_TIMELINE=1 timeout -s KILL 150 /tmp/bench28 --device cuda "$@" > $OUT/$tag.txt 2> $OUT/$tag.err; echo "rc $? $tag" >> $L
  grep '\[timeline\] 1 tokens' $OUT/$tag.err | python3 -c "
import sys,re,statistics as st
rows=[tuple(float(x) for x in re.findall(r'([0-9.]+) ms', l)) for l in sys.stdin]
rows=rows[4:]
d=st.median(r[0] for r in rows); q=st.median(r[1] for r in rows); w=st.median(r[2] for r in rows)
print('%-10s decode tokens %3d  device %.2f ms  host queueing %.2f ms  wall %.2f ms  (%.0f tok/s wall)' % ('$tag', len(rows), d, q, w, 1000/w))" >> $OUT/table.txt; }
T q4_res --model /tmp/q4.gguf -p 16 -n 48 -r 1 --mode resident --context 1024
T q14_res --model /tmp/q14.gguf -p 16 -n 48 -r 1 --mode resident --context 1024
T q4_500 --model /tmp/q4.gguf -p 16 -n 32 -r 1 --mode auto --vram-budget 500MiB --context 640 --prefill-chunk 64
B() { tag=$1; shift; timeout -s KILL 150 /tmp/bench28 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? $tag" >> $L; grep '^| ' $OUT/$tag.txt | tail -2 >> $OUT/table.txt; }
B q4_res_plain --model /tmp/q4.gguf -p 16 -n 64 -r 3 --mode resident --context 1024
B q14_res_plain --model /tmp/q14.gguf -p 16 -n 64 -r 3 --mode resident --context 1024
grep -E "rc |rror|panic" $L | head
cat $OUT/table.txt
