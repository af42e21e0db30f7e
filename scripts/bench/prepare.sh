#!/usr/bin/env bash
# Benchmark harness, step 1 of 2 — on the development machine (cargo, no GPU needed).
# Builds `cardinfer` with CUDA and packs what the GPU machine needs into .gpu/bench/:
#   cardinfer.gz       our binary (sm_90: H100/H200)
#   llama.cpp.tar.xz   llama.cpp's source as vendored in PyPI llama-cpp-python==0.3.36
#                      (llama.cpp commit 0c1e570), sha256-checked, without what a CUDA
#                      build does not read
#   lib/               libraries the binary needs that a bare GPU machine may lack
# Then, on the GPU machine: bash scripts/bench/run.sh [ROWS]  (see run.sh).
#
#   scripts/bench/prepare.sh            # needs nvcc on PATH (CUDA_HOME set), or
#   CARDINFER_CUDA_ENV=~/.cache/cardinfer-cuda-13.0/env.sh scripts/bench/prepare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu/bench
mkdir -p "$out/lib"
if [ -n "${CARDINFER_CUDA_ENV:-}" ]; then source "$CARDINFER_CUDA_ENV"; fi
command -v nvcc >/dev/null || { echo "nvcc not found: set CARDINFER_CUDA_ENV or put nvcc on PATH" >&2; exit 2; }
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

# BENCH_DEV=1 also builds the developer tools (cardinfer-dev: soak.sh needs it).
features=cuda; bins=(--bin cardinfer)
if [ -n "${BENCH_DEV:-}" ]; then features=cuda,dev; bins+=(--bin cardinfer-dev); fi
echo "building ${bins[*]} (release, $features, sm_$CUDA_COMPUTE_CAP) ..." >&2
cargo build --release --features "$features" "${bins[@]}" >&2
for bin in cardinfer ${BENCH_DEV:+cardinfer-dev}; do
  gzip -9 -c "target/release/$bin" > "$out/$bin.gz.tmp" && mv "$out/$bin.gz.tmp" "$out/$bin.gz"
done
git rev-parse --short HEAD > "$out/commit"
git diff --quiet HEAD -- crates src Cargo.toml Cargo.lock || echo "+uncommitted" >> "$out/commit"
# Libraries outside CUDA's that the binary links and a bare machine may not have.
for lib in $(ldd target/release/cardinfer | awk '/=>/ {print $3}' | grep -E 'libgomp|libstdc\+\+' || true); do
  cp -L "$lib" "$out/lib/"
done

# llama.cpp, pinned: the sdist's URL and sha256 as PyPI lists them.
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
sha="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
cache="${CARDINFER_CACHE:-$HOME/.cache/cardinfer}/src"
sdist="$cache/llama_cpp_python-0.3.36.tar.gz"
mkdir -p "$cache"
if ! { [ -f "$sdist" ] && echo "$sha  $sdist" | sha256sum -c --status; }; then
  echo "fetching llama-cpp-python 0.3.36 (76 MB) ..." >&2
  curl -fsSL "$url" -o "$sdist.tmp"
  echo "$sha  $sdist.tmp" | sha256sum -c --status || { rm -f "$sdist.tmp"; echo "sha256 mismatch for $url" >&2; exit 1; }
  mv "$sdist.tmp" "$sdist"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
rm -rf "$src/models" "$src/docs" "$src/tools/ui" "$src/media" "$src/gguf-py/tests"
for backend in "$src"/ggml/src/ggml-*/; do
  case "$(basename "$backend")" in ggml-cuda|ggml-cpu) ;; *) rm -rf "$backend" ;; esac
done
tar -C "$src/.." -cJf "$out/llama.cpp.tar.xz.tmp" llama.cpp && mv "$out/llama.cpp.tar.xz.tmp" "$out/llama.cpp.tar.xz"
du -sh "$out"/* >&2
