#!/usr/bin/env bash
# Sets up what the tests need (idempotent) and runs every gate:
# ruff format, ruff check, mypy on app/ and crdt/, then pytest with warnings as errors.
# Installs: the Python packages (.venv), the JS Yjs packages (npm), Chromium (apt, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# JavaScript Yjs, for the interop tests (versions pinned by tests/js/package-lock.json).
if [ -f tests/js/package.json ] && [ ! -d tests/js/node_modules ]; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# Debian's Chromium and ChromeDriver, for the dashboard's browser test (tests/test_dashboard.py).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    AS_ROOT=""
    [ "$(id -u)" = 0 ] || AS_ROOT="sudo -n"
    if command -v apt-get >/dev/null && $AS_ROOT true 2>/dev/null; then
        $AS_ROOT apt-get update -qq
        $AS_ROOT env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "the browser test needs Debian's chromium and chromium-driver:" \
            "sudo apt-get install chromium chromium-driver" >&2
    fi
fi

echo "== ruff format";  .venv/bin/ruff format --check .
echo "== ruff check";   .venv/bin/ruff check .
echo "== mypy";         .venv/bin/mypy
echo "== pytest";       .venv/bin/python -m pytest -W error "$@"
