#!/usr/bin/env bash
# README command 2: set up everything the tests need, check style and types, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/test_rules_parser.py -x).
# LLMWALL_CHECKS=0 skips the lint/format/type checks (for a quick run of a few tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Style and types first: they take seconds and fail fast. Configured in pyproject.toml.
if [ "${LLMWALL_CHECKS:-1}" != 0 ]; then
  echo "llmwall: ruff check, ruff format --check, mypy" >&2
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
fi
# Real headless Chromium for the browser test (Debian's package; no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "llmwall: installing Debian's chromium for the browser test" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "llmwall: chromium is missing; install it (Debian: apt-get install chromium)" >&2; exit 1
  fi
fi
# Real redis-server for the rate-limit tests (Debian's package; the tests start their own on a free port).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "llmwall: installing Debian's redis-server for the rate-limit tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "llmwall: redis-server is missing; install it (Debian: apt-get install redis-server)" >&2; exit 1
  fi
fi
# Python 3.11 + CPU torch for the ONNX-vs-PyTorch parity tests (export tooling, never the runtime).
export LLMWALL_EXPORT_PYTHON=${LLMWALL_EXPORT_PYTHON:-$(bash scripts/setup-export-env.sh | tail -n 1)}
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
