#!/usr/bin/env bash
# Issue 7, session 15: host layers' serial steps vectorized (986d3e6, bench122) against the
# code before (6a6608c, bench121: the same stage timings and knobs), in turn on one loan:
# host_layer alone, fixed 18 with stage timings (STAGES=1), fixed 18 and the search plain.
set -uo pipefail
L=$OUT/log.txt; T=$OUT/table.txt
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
for b in bench121 bench122 host_layer121 host_layer122 probe90 synth90; do [ -x /tmp/$b ] || {
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/$b && chmod +x /tmp/$b; }; done
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; date -u) > $T 2>&1
[ -f /tmp/probed90 ] || { timeout -s KILL 150 /tmp/probe90 --device cuda > $OUT/probe.txt 2>&1; touch /tmp/probed90; }
grep -E "best|h2d, page|hop" $OUT/probe.txt >> $T 2>/dev/null
[ -f /tmp/q4.gguf ] || /tmp/synth90 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
HL() { n=$1; echo "== host_layer$n" >> $L
  STAGES=1 RAYON_NUM_THREADS=14 timeout -s KILL 60 /tmp/host_layer$n --model /tmp/q4.gguf --layers 16 --ways exact > /tmp/hl.txt 2>&1
  grep -v "^norm" /tmp/hl.txt >> $L; echo "alone $n: $(python3 .gpu/stg.py /tmp/hl.txt) $(grep -E 'exact:' /tmp/hl.txt | awk '{print $(NF-1)}' | tr '\n' ' ')" >> $T; }
B() { tag=$1; n=$2; st=$3; shift 3; echo "== $tag $n: $*" >> $L
  env $st timeout -s KILL 120 /tmp/bench$n --device cuda "$@" > /tmp/$tag.txt 2>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  grep -E "^plan|^predicted|^host layers|^device memory" /tmp/$tag.err >> $L
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-9s %s %6.2f tok/s (pred %6.2f) peak %5.0f MiB sum %s' % ('$tag', '$n', d['tok_s'], d['predicted_tok_s'], (d['peak_device_bytes'] or 0)/2**20, d['generated_checksum']))
    if m.get('host_tuning'): print('    ' + m['host_tuning'])" >> $T
  if [ -n "$st" ]; then echo "    in pass: $(python3 .gpu/stg.py /tmp/$tag.err)" >> $T; fi; }
Q4="--model /tmp/q4.gguf -p 0 -n 40 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto"
for n in 121 122 121 122; do HL $n; done
for n in 121 122; do B fixed18 $n STAGES=1 $Q4 -r 3 --hybrid --host-layers 18; done
for n in 121 122 121 122; do B fixed18 $n "" $Q4 -r 3 --hybrid --host-layers 18; done
for n in 121 122 121 122; do B search $n "" $Q4 -r 5 --hybrid; done
grep -h -iE "error|panic" /tmp/*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head
cat $T
