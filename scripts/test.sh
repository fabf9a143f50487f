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
# Programs the tests run for real (Debian's packages; no downloads of their own): installed with
# apt-get when running as root, else a clear message and exit.
need_debian_package() {  # command, package, what needs it
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "llmwall: installing Debian's $2 for $3" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "llmwall: $1 is missing, needed for $3; install it (Debian: apt-get install $2)" >&2; exit 1
  fi
}
# Real headless Chromium for the browser test.
need_debian_package chromium chromium "the browser test"
# Real redis-server for the rate-limit tests (they start their own on a free port).
need_debian_package redis-server redis-server "the rate-limit tests"
# Real HAProxy for the scale-out test (tests/test_scale_out.py starts its own from docs/scale-out.md).
need_debian_package haproxy haproxy "the scale-out test"
# Python 3.11 + CPU torch for the ONNX-vs-PyTorch parity tests (export tooling, never the runtime).
export LLMWALL_EXPORT_PYTHON=${LLMWALL_EXPORT_PYTHON:-$(bash scripts/setup-export-env.sh | tail -n 1)}
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
