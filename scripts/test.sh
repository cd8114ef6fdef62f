#!/usr/bin/env bash
# Install (if needed), lint, and run the whole test suite (slow tests too) on the test corpus in tests/fixtures.
# Arguments go to pytest: bash scripts/test.sh -m "not slow" runs the fast subset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check poemctl tests
.venv/bin/python -m pytest -q "$@"
