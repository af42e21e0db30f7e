#!/usr/bin/env bash
set -uo pipefail
export RUST_BACKTRACE=0
L=$OUT/log.txt
for b in generate synth; do gzip -dc .gpu/$b.gz > /tmp/${b}14 && chmod +x /tmp/${b}14; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q14.gguf ] || /tmp/synth14 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
IDS=$(python3 -c "print(','.join(str((i*7919+13)%151936) for i in range(100)))")
G() { tag=$1; shift; echo "== $tag: $*" >> $L
  timeout -s KILL 150 /tmp/generate14 --device cuda --model /tmp/q14.gguf --prompt-ids $IDS --max-tokens 32 --temperature 0 --json --vram-budget 6GiB --context 1024 "$@" > $OUT/$tag.json 2>>$L; echo "rc $? ($tag)" >> $L
  python3 -c "
import json; d=json.load(open('$OUT/$tag.json')); print('$tag', 'decode %.2f prefill %.0f peak %s host_bytes %s ids %s' % (d['decode_tok_s'], d['prefill_tok_s'], d['peak_device_bytes'], d.get('host_bytes_per_token'), d['generated_ids'][:12]))" >> $OUT/summary.txt 2>>$L; }
G stream
G hybrid --hybrid
cat $OUT/summary.txt; grep -E "rc |rror" $L | head
