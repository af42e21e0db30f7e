#!/usr/bin/env bash
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
for b in bench synth; do gzip -dc .gpu/$b.gz > /tmp/${b}15 && chmod +x /tmp/${b}15; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth15 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench15 --device cuda "$@" > $OUT/$tag.txt 2>>$L; echo "rc $? ($tag)" >> $L
  grep '^{' $OUT/$tag.txt | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); print('$tag', d['test'], 'measured %.2f predicted %.2f peak %s budget %s checksum %s' % (d['tok_s'], d['predicted_tok_s'], d['peak_device_bytes'], d['budget_bytes'], d['generated_checksum']))" >> $OUT/pred.txt; }
B q4_kvhost 200 --model /tmp/q4.gguf -p 512 -n 16 -r 1 --mode auto --vram-budget 2GiB --context 32768 --prefill-chunk 64
B q4_kvdev 120 --model /tmp/q4.gguf -p 512 -n 16 -r 1 --mode auto --vram-budget 2GiB --context 1024 --prefill-chunk 64
cat $OUT/pred.txt; grep -E "rc |rror|predicted" $L | head
