#!/usr/bin/env bash
# README command 1: set up, then run the browser demo (mock LLM + proxy + chat page + dashboard).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/llmwall demo "$@"
