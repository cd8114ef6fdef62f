#!/usr/bin/env bash
# The checks that need a GPU (issues 5 and 7), as one short script for a lent GPU machine; not run in CI.
# Usage: bash scripts/gpu_check.sh CORPUS_DIR   (prints the tables; about 5 minutes on one H100)
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:?corpus folder}
OUT=${OUT:-gpu-out}
D=(--corpus "$CORPUS" --cache-dir "$OUT/cache")
# Speed against cuDNN at batch 64 and 1024, float32 (issue 7).
poemctl bench --device cuda --models cudnn-lstm,torch-lstm --batch-size 64 --steps 50 "${D[@]}"
poemctl bench --device cuda --models cudnn-lstm,torch-lstm --batch-size 1024 --steps 20 "${D[@]}"
# Mixed precision: 500 steps in fp32 and bf16, same seed and data order (issue 5).
for mp in no bf16; do
  poemctl train --mixed-precision "$mp" --max-steps 500 --eval-every 500 --save-every 0 "${D[@]}" --out "$OUT/mp-$mp"
done
python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
loss = {mp: [json.loads(x)["loss"] for x in next((out / f"mp-{mp}").iterdir()).joinpath("metrics.jsonl")
             .read_text().splitlines() if '"loss"' in x] for mp in ("no", "bf16")}
rel = [abs(a - b) / a for a, b in zip(loss["no"], loss["bf16"], strict=True)]
print(f"bf16 vs fp32 over {len(rel)} steps: max relative loss difference {max(rel):.2%}, last {rel[-1]:.2%}")
PY
