#!/usr/bin/env bash
# Issue 7, session 9: does a host layer slow down beside the link's copies? host_layer
# (4B shape, 14 threads, the exact twin and Candle's block) alone, then while a
# stream-only 4B bench keeps the copy engine busy reading host memory.
set -uo pipefail
for b in bench synth host_layer; do
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" .gpu/$b.xz /tmp/${b}72 && chmod +x /tmp/${b}72
done
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
/tmp/synth72 --preset qwen3-4b --output /tmp/q4.gguf > /dev/null 2>&1
H="--hidden 2560 --intermediate 9728 --heads 32 --steps 48"
echo "alone:"; RAYON_NUM_THREADS=14 /tmp/host_layer72 $H 2>&1 | grep "round [12]"
RAYON_NUM_THREADS=2 timeout -s KILL 60 /tmp/bench72 --device cuda --model /tmp/q4.gguf -p 0 -n 400 -r 1 --vram-budget 500MiB --context 640 --prefill-chunk 64 --mode auto > $OUT/str.txt 2>&1 &
sleep 12
echo "beside a stream-only bench:"; RAYON_NUM_THREADS=14 /tmp/host_layer72 $H 2>&1 | grep "round [12]"
kill %1 2>/dev/null; wait
echo "alone again:"; RAYON_NUM_THREADS=14 /tmp/host_layer72 $H 2>&1 | grep "round [12]"
grep -E "tok/s|tg" $OUT/str.txt | tail -2
