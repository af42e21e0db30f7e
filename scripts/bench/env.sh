# Sourced by the GPU-machine scripts (run.sh, soak.sh): the CUDA libraries our binaries
# load — the machine's torch environment, then the usual places — and the packed ones.
pack=${pack:-.gpu/bench}
py=${TORCH_PY:-/opt/torch/.venv/bin/python3}
libs="$PWD/$pack/lib"
if [ -x "$py" ]; then
  sp=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for d in "$sp"/nvidia/*/lib; do [ -d "$d" ] && libs="$libs:$d"; done
fi
for d in /usr/local/cuda/lib64 /usr/local/nvidia/lib64; do [ -d "$d" ] && libs="$libs:$d"; done
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"
