#!/usr/bin/env bash
# Issue 7, session 10: run75's binaries (commit 84fe8f4) again on the same loan, the 4B at
# 500 MiB repeated (search x3, fixed 17 x2, fixed 15) to show the spread, with the CPU's
# steal time logged (vmstat 1) beside each row; the 14B's search once. At most 8 files.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}76 && chmod +x /tmp/${b}76
done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
T=$OUT/table.txt
(nproc; nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep -E "Model name|L3") > $T 2>&1
[ -f /tmp/q4.gguf ] || /tmp/synth76 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth76 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
timeout -s KILL 150 /tmp/probe76 --device cuda > $OUT/probe.txt 2>&1; grep -E "best|h2d, page" $OUT/probe.txt >> $T
B() { tag=$1; t=$2; shift 2; echo "== $tag: $*" >> $L
  vmstat -n 1 > /tmp/vm.txt & VM=$!
  timeout -s KILL $t /tmp/bench76 --device cuda "$@" > /tmp/$tag.txt 2>>/tmp/$tag.err; echo "rc $? ($tag)" >> $L
  kill $VM; steal=$(awk 'NR>2 {s+=$17; u+=$13; n++} END {if (n) printf "steal %.1f%% user %.1f%% over %d s", s/n, u/n, n}' /tmp/vm.txt)
  grep '^{' /tmp/$tag.txt | grep tg | python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l); m=d['metrics']
    print('%-10s %6.2f tok/s peak %4.0f MiB host %4.0f MB/tok host %5.2f s sum %s | %s' % ('$tag', d['tok_s'], (d['peak_device_bytes'] or 0)/2**20, m['host_bytes_per_token']/1e6, m['host_secs'], d['generated_checksum'], '$steal'))
    if m.get('host_tuning'): print('    search: ' + m['host_tuning'])" >> $T; }
Q14="--model /tmp/q14.gguf -p 0 -n 40 -r 3 --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf -p 0 -n 40 -r 3 --vram-budget 500MiB --context 640 --prefill-chunk 64"
B q4_res 100 --model /tmp/q4.gguf -p 0 -n 40 -r 3 --context 640 --mode resident
for i in 1 2 3; do B q4_tune$i 100 $Q4 --mode auto --hybrid; done
for i in 1 2; do B q4_n17_$i 100 $Q4 --mode auto --hybrid --host-layers 17; done
B q4_n15 100 $Q4 --mode auto --hybrid --host-layers 15
B q4_str 100 $Q4 --mode auto
B q14_tune 120 $Q14 --mode auto --hybrid
grep -h -iE "error|panic" /tmp/q*.err | head -20 >> $L
grep -E "rc [^0]|rror|panic" $L | head -20
cat $T
