#!/usr/bin/env bash
# Issue 7, diagnosis: where a hybrid token's time goes outside the pass, and what the
# first token of a fresh cache costs (every pass's timeline summary, two repetitions),
# for both models; the 14B's detailed timeline.
set -uo pipefail
L=$OUT/log.txt
for b in bench synth probe; do gzip -dc .gpu/$b.gz > /tmp/${b}62 && chmod +x /tmp/${b}62; done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
[ -f /tmp/q4.gguf ] || /tmp/synth62 --preset qwen3-4b --output /tmp/q4.gguf >> $L 2>&1
[ -f /tmp/q14.gguf ] || /tmp/synth62 --preset qwen3-14b --output /tmp/q14.gguf >> $L 2>&1
/tmp/probe62 --device cuda > $OUT/probe.txt 2>&1; grep -E "best|h2d, page" $OUT/probe.txt >> $OUT/table.txt
S() { tag=$1; shift; CARDINFER_TIMELINE=1 timeout -s KILL 150 /tmp/bench62 --device cuda "$@" -p 0 -n 8 -r 2 --no-host-tuning > $OUT/s_$tag.out 2> $OUT/s_$tag.txt; echo "== $tag" >> $OUT/table.txt
  grep "^\[timeline\]" $OUT/s_$tag.txt | sed -E 's/ \| .*//' | tail -17 >> $OUT/table.txt; grep "tok/s\|^|" $OUT/s_$tag.out | tail -1 >> $OUT/table.txt; }
Q14="--model /tmp/q14.gguf --vram-budget 6GiB --context 1024"
Q4="--model /tmp/q4.gguf --vram-budget 500MiB --context 640 --prefill-chunk 64"
S q4hyb $Q4 --mode auto --hybrid
S q4str $Q4 --mode auto
S q14hyb $Q14 --mode auto --hybrid
CARDINFER_TIMELINE=2 timeout -s KILL 120 /tmp/bench62 --device cuda $Q14 --mode auto --hybrid --no-host-tuning -p 0 -n 10 -r 1 2>&1 >/dev/null | grep "^\[timeline\] 1 tokens" | tail -1 > $OUT/tl_q14.txt
rm -f $OUT/s_*.out
grep -E "rc [^0]|rror|panic" $L $OUT/s_*.txt | head -20
cat $OUT/table.txt
