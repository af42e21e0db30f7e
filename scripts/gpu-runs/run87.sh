#!/usr/bin/env bash
# Issue 7, session 11 (commit e51088a: the search watches the settled split against
# stream-only): the 4B at 500 MiB, stream-only and hybrid search x3 (-r 5), after a probe.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench probe synth; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/${b}87.xz /tmp/${b}87 && chmod +x /tmp/${b}87
done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
timeout -s KILL 150 /tmp/probe87 --device cuda > $OUT/probe.txt 2>&1; grep -E "best|h2d, page" $OUT/probe.txt >> $T
[ -f /tmp/q4.gguf ] || /tmp/synth87 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  timeout -s KILL $t /tmp/bench87 --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^host layers" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-11s %6.2f tok/s peak %5.0f MiB sum %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
B q4_stream 100 $Q4 -r 3
for i in 1 2 3; do B q4_hybrid$i 150 $Q4 -r 5 --hybrid; done
grep -E "rc [^0]|rror|panic" $L | head
cat $T
