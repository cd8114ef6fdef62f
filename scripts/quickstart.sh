#!/usr/bin/env bash
# The main job on a fresh machine: install, get the corpus, train a short run, write a poem.
# Usage: bash scripts/quickstart.sh [CORPUS_SOURCE]   (default: the upstream GitHub repository)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
if [ ! -d data/chinese-poetry/全唐诗 ]; then
    poemctl data download ${1:+--from "$1"}
fi
poemctl train --max-steps 300
poemctl sample 月 --lines 4 --seed 1
