#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 interpreter, or fails with a clear message.
# Looks at $LLMWALL_PYTHON, then PATH, then pyenv's and the usual install folders,
# because on some machines (this project's CI among them) 3.12 is installed but not first on PATH.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
candidates=()
[ -n "${LLMWALL_PYTHON:-}" ] && candidates+=("$LLMWALL_PYTHON")
for name in python3.14 python3.13 python3.12 python3 python; do
  p=$(command -v "$name" 2>/dev/null) && candidates+=("$p")
done
for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]* /usr/local/bin /usr/bin /opt/python/*/bin; do
  for exe in "$dir"/bin/python3 "$dir"/python3.1[2-9]; do
    [ -x "$exe" ] && candidates+=("$exe")
  done
done
for c in "${candidates[@]}"; do
  if ok "$c"; then echo "$c"; exit 0; fi
done
echo "llmwall: no Python >= 3.12 found (looked at \$LLMWALL_PYTHON, PATH, ~/.pyenv/versions, /usr/local/bin, /usr/bin)." >&2
echo "llmwall: install Python 3.12 or set LLMWALL_PYTHON=/path/to/python3.12" >&2
exit 1
