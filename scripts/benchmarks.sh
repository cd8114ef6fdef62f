#!/usr/bin/env bash
# The full-corpus benchmarks reported in docs/benchmarks.md and docs/speed.md (not tests); each writes under $OUT (default bench-out/).
# Usage: bash scripts/benchmarks.sh CORPUS_DIR [main|mainref|study|speed|parity|poems|poem-model|adjust|speedrun|load|tied]...
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:?corpus folder, e.g. ../shared/chinese-poetry}; shift
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
D=(--corpus "$CORPUS" --cache-dir "$OUT/cache")
[ $# -gt 0 ] || set -- main study speed parity poems
for what in "$@"; do
  case $what in
    main)    # the course preset, 10 epochs, torch-lstm
      poemctl train "${D[@]}" --out "$OUT/main"
      poemctl plot "$OUT"/main/* -o "$OUT/main.png" ;;
    mainref) # issue 2's run with the reference torch.nn.LSTM (same seed and data order), for comparison
      poemctl train --model cudnn-lstm "${D[@]}" --out "$OUT/main-ref"
      poemctl plot "$OUT"/main/* "$OUT"/main-ref/* -o "$OUT/main-vs-ref.png" ;;
    study)   # issues 4 and 20: the course's four optimizers, 10 epochs each, same seed and data order
      poemctl compare --optimizers sgd,momentum,adagrad,adam --epochs 10 --eval-every 240 "${D[@]}" \
        --out "$OUT/study" ;;
    speedrun) # issue 20: the speedrun records (docs/speedrun.md), each three times
      for recipe in speedrun speedrun-muon; do
        for seed in 0 1 2; do
          poemctl train --config "recipes/$recipe.toml" --seed "$seed" "${D[@]}" --out "$OUT/speedrun/$recipe"
        done
      done ;;
    load)    # issue 19: the corpus 16 times over against once: preprocessing, cache, memory
      python scripts/corpus_load.py "$CORPUS" --times 16 --out "$OUT/load" ;;
    tied)    # issue 18: the course split with tied weights, E = H = 512 (recipes/quality-tied.toml)
      poemctl train --config recipes/quality-tied.toml "${D[@]}" --out "$OUT/tied"
      poemctl plot "$OUT"/tied/* -o "$OUT/tied.png" ;;
    speed)   # issues 3 and 7: tokens/s side by side, in one run
      poemctl bench --models cudnn-lstm,torch-lstm,numpy-lstm --steps 10 --repeats 6 "${D[@]}"
      poemctl bench --models cudnn-lstm,torch-lstm,numpy-lstm --batch-size 256 --steps 5 --repeats 4 "${D[@]}" ;;
    parity)  # issues 3 and 7: numpy-lstm and cudnn-lstm (torch.nn.LSTM) against torch-lstm, 200 steps, same seed
      for m in torch-lstm numpy-lstm cudnn-lstm; do
        poemctl train --model "$m" --max-steps 200 --save-every 0 "${D[@]}" --out "$OUT/parity/$m"
      done
      python - "$OUT/parity" <<'PY'
import json, pathlib, sys
models = ("torch-lstm", "numpy-lstm", "cudnn-lstm")
runs = {m: next((pathlib.Path(sys.argv[1]) / m).iterdir()) for m in models}
loss = {m: [json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
        for m, r in runs.items()}
for m in models[1:]:
    rel = [abs(a - b) / b for a, b in zip(loss[m], loss["torch-lstm"], strict=True)]
    print(f"{m} vs torch-lstm over {len(rel)} steps: max relative loss difference {max(rel):.2e}, "
          f"mean {sum(rel) / len(rel):.2e}")
PY
      ;;
    poems)   # issue 6: 1000 poems from the best main checkpoint, without and with --rhyme / --tones
      ckpt=$(ls -t "$OUT"/main/*/best.safetensors | head -1)
      poemctl evaluate --ckpt "$ckpt" --num 1000 --corpus "$CORPUS" --json > "$OUT/poems-plain.json"
      poemctl evaluate --ckpt "$ckpt" --num 1000 --rhyme --corpus "$CORPUS" --json > "$OUT/poems-rhyme.json"
      poemctl evaluate --ckpt "$ckpt" --num 1000 --rhyme --tones --corpus "$CORPUS" --json > "$OUT/poems-tones.json"
      poemctl sample 月 --ckpt "$ckpt" --num 3 --seed 1 --rhyme --tones ;;
    poem-model) # issue 18: the bundled poem model, two stages (recipes/poem*.toml), its figures, and the bundle
      poemctl train --config recipes/poem.toml "${D[@]}" --out "$OUT/poem/stage1"
      s1=$(ls -d "$OUT"/poem/stage1/*/ | tail -1)
      poemctl train --config recipes/poem-quatrains.toml --init-from "$s1/best.safetensors" "${D[@]}" \
        --out "$OUT/poem/stage2"
      s2=$(ls -d "$OUT"/poem/stage2/*/ | tail -1)
      for args in "--chars 7" "--chars 7 --real" "--chars 5" "--chars 5 --real"; do
        # shellcheck disable=SC2086
        poemctl evaluate --ckpt "$s2/best.safetensors" --num 1000 $args --corpus "$CORPUS"
      done
      python -m poemctl.checkpoint "$s2/best.safetensors" "$OUT/poem/poem-unadjusted.safetensors"  # float16
      # The bundle: its output bias tilted away from characters common everywhere (docs/model-card.md).
      poemctl adjust "$OUT/poem/poem-unadjusted.safetensors" --tau 0.4 --corpus "$CORPUS" \
        -o "$OUT/poem/poem.safetensors"
      for args in "--chars 7" "--chars 7 --seed 1" "--chars 5"; do
        # shellcheck disable=SC2086
        poemctl evaluate --ckpt "$OUT/poem/poem.safetensors" --num 1000 $args --corpus "$CORPUS"
      done
      echo "bundle: $OUT/poem/poem.safetensors (copy it to poemctl/bundled/ if it is better)" ;;
    adjust)  # issue 18 (after poem-model): the bundled model's tilt τ against its diversity, rhyme, tones and perplexity
      for tau in 0.1 0.2 0.3 0.4 0.5 0.6 0.8; do
        poemctl adjust "$OUT/poem/poem-unadjusted.safetensors" --tau "$tau" --corpus "$CORPUS" \
          -o "$OUT/poem/tau-$tau.safetensors"
        poemctl evaluate --ckpt "$OUT/poem/tau-$tau.safetensors" --num 1000 --corpus "$CORPUS"
      done ;;
    *) echo "unknown benchmark: $what" >&2; exit 2 ;;
  esac
done
