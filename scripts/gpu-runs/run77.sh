#!/usr/bin/env bash
# Issue 7, session 10: after the review refactor (commit cc5adb6: the head's CPU rows and
# the pass's thread scope), the 4B at 500 MiB resident vs hybrid (search, fixed 17):
# ids' checksums and tok/s, after a probe.
set -uo pipefail
for b in bench synth probe; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}77 && chmod +x /tmp/${b}77
done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name --format=csv,noheader
/tmp/probe77 --device cuda > /dev/null 2>&1
/tmp/synth77 --preset qwen3-4b --output /tmp/q4.gguf > /dev/null 2>&1
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64"
for row in "res|--model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident" "search|$Q4 --mode auto --hybrid" "fixed17|$Q4 --mode auto --hybrid --host-layers 17"; do
  tag=${row%%|*}; args=${row#*|}
  timeout -s KILL 100 /tmp/bench77 --device cuda $args 2>/tmp/$tag.err | grep '^{' | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); print('%-8s %6.2f tok/s peak %4.0f MiB sum %s %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum'], d['metrics'].get('host_tuning') or ''))"
  grep -h "head's" /tmp/$tag.err | head -1
done
# Run afterwards on the same warm machine (separate `run` calls): the probe again, printing
# its CPU rows (`/tmp/probe77 --device cuda | grep CPU`), then the two hybrid rows with the
# profile it wrote (12 threads):
#   /tmp/bench77 --device cuda $Q4 --mode auto --hybrid --host-layers 17
#   /tmp/bench77 --device cuda $Q4 --mode auto --hybrid
