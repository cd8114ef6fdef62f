#!/usr/bin/env bash
# Create .venv and install poemctl; with --test, its test tools too. torch is installed first and pinned: an
# unpinned torch (asked for by any dependency) would pull a multi-GB CUDA build instead of the CPU wheel.
# Usage: bash scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade "pip<27"
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ "${1:-}" != --test ]; then
    .venv/bin/python -m pip install -q -e .
    exit 0
fi
if [ "$(uname -sm)" = "Linux x86_64" ]; then
    # the GPU image's Triton (640 MB, tests only): its interpreter runs torch-lstm's fused-step kernels on the CPU
    .venv/bin/python -m pip install -q "triton==3.6.0"
fi
.venv/bin/python -m pip install -q -e ".[test]"
# The browser test (tests/test_web.py) drives Debian's Chromium through Playwright: as root (CI), install it.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
        echo "note: tests/test_web.py needs Chromium: sudo apt-get install chromium" >&2
    fi
fi
# The tests register their third-party plugin package (tests/plugin_pkg) themselves, in their own process.
# Earlier versions of this script installed it into .venv, where its broken-on-purpose plugin warned on
# every command: take it out again.
if .venv/bin/python -m pip show -q poemctl-testplugin 2>/dev/null; then
    .venv/bin/python -m pip uninstall -q -y poemctl-testplugin
fi
