#!/usr/bin/env bash
# Install (if needed), lint, and run the whole test suite. The corpus is read from ../shared/chinese-poetry.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check poemctl tests
.venv/bin/python -m pytest -q "$@"
