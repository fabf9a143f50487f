#!/usr/bin/env bash
# Creates .venv with llmwall and its test dependencies; quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash scripts/find-python.sh)
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  echo "llmwall: creating .venv with $py" >&2
  rm -rf .venv
  "$py" -m venv .venv
fi
stamp=.venv/.llmwall-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "llmwall: installing dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c "import llmwall, mitmproxy, onnxruntime, presidio_analyzer, lark, pytest" \
    || { echo "llmwall: dependency installation failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
