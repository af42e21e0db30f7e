#!/usr/bin/env bash
# Fetches the real models the tests need (scripts/fetch-model.sh, each pinned and
# sha256-checked): SmolLM2-135M-Instruct and Gemma-3-270M.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh smollm2
scripts/fetch-model.sh gemma3-270m
