#!/usr/bin/env bash
# Issue 4, first real-model check (SmolLM2 carried in three parts as in run36.sh, with generate.gz):
# greedy generation of the four llama.cpp reference prompts with CARDINFER_DECODE=plain and =fused
# (compare with greedy.json), then decode_check on the model. Third call:
set -uo pipefail
PY=/opt/torch/.venv/bin/python3; SP=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for d in "$SP"/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done; export LD_LIBRARY_PATH
cat /tmp/smol.part00 /tmp/smol.part01 .gpu/smol.part02 > /tmp/smol.gguf
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/smol.gguf" | sha256sum -c
for path in plain fused; do
  CARDINFER_DECODE=$path /tmp/generate34 --model /tmp/smol.gguf --device cuda --prompt-ids 504,3575,282,4649,314 \
    --temperature 0 --max-tokens 32 --json > $OUT/gen_0_$path.json
done
/tmp/decode_check34 --model /tmp/smol.gguf --device cuda --mode resident -p 5 -n 40 > $OUT/check_smol.txt
tail -1 $OUT/check_smol.txt
