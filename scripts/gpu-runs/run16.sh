#!/usr/bin/env bash
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
for b in bench synth; do gzip -dc .gpu/$b.gz > /tmp/${b}16 && chmod +x /tmp/${b}16; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth16 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth16 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench16 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); print('$tag', d['test'], '%.2f checksum %s' % (d['tok_s'], d['generated_checksum']))" >> $OUT/res.txt; }
for round in 1 2; do
  CARDINFER_NO_ROPE_CACHE=1 B q4_plain_$round 90 --model /tmp/q4.gguf -p 512 -n 64 -r 3 --mode resident --context 1024
  B q4_cached_$round 90 --model /tmp/q4.gguf -p 512 -n 64 -r 3 --mode resident --context 1024
done
CARDINFER_NO_ROPE_CACHE=1 B q14_plain 120 --model /tmp/q14.gguf -p 512 -n 64 -r 3 --mode resident --context 1024
B q14_cached 120 --model /tmp/q14.gguf -p 512 -n 64 -r 3 --mode resident --context 1024
cat $OUT/res.txt; grep -E "rc " $L
