#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv.
# Sourced by ./tocsin and ./run-tests; re-installs when pyproject.toml changes.
set -euo pipefail

tocsin_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tocsin_venv="${TOCSIN_VENV:-$tocsin_root/.venv}"

tocsin_find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "tocsin: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

tocsin_ensure_venv() {
  local stamp="$tocsin_venv/.tocsin-installed"
  local want
  want="$(cat "$tocsin_root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [ -x "$tocsin_venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  local python
  python="$(tocsin_find_python)"
  if [ ! -x "$tocsin_venv/bin/python" ]; then
    echo "tocsin: creating the virtual environment in .venv (first run only)..." >&2
    "$python" -m venv "$tocsin_venv"
  fi
  echo "tocsin: installing tocsin and its dependencies into .venv..." >&2
  "$tocsin_venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$tocsin_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$tocsin_root[dev,bench]" >&2
  echo "$want" >"$stamp"
}
