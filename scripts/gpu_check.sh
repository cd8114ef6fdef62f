#!/usr/bin/env bash
# The checks that need a GPU (issues 5 and 7), as one short script for a lent GPU machine; not run in CI.
# Usage: bash scripts/gpu_check.sh CORPUS_DIR [grads] [speed] [bf16]   (all three when none is named;
# prints the tables; grads about 1 minute on one H100, speed about 5, bf16 about 2). A part that fails says
# so and the others still run.
# On this workplace's device machines, prepare it first: scripts/gpu_prepare.sh says how.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:?corpus folder}
shift
PARTS=${*:-grads speed bf16}
OUT=${OUT:-gpu-out}
D=(--corpus "$CORPUS" --cache-dir "$OUT/cache")
# torch-lstm's hand-written backward on the GPU, eager, from CUDA graphs (--cuda-graphs), with fused Triton
# steps (--fused-steps) and both: same losses and gradients as on the CPU (float64), over three batches
# (the second replays the first's graphs).
[[ " $PARTS " == *" grads "* ]] && { python - <<'PY' || echo "FAILED: the gradient check"; }
import torch
from poemctl.config import ModelConfig
from poemctl.models.torch_lstm import TorchLSTM
torch.manual_seed(0)
cpu = TorchLSTM(ModelConfig(vocab_size=300, hidden=32, embedding=16)).double()
batches = [torch.randint(1, 300, shape) for shape in ((8, 20), (8, 20), (5, 30))]
failed = []
for graphs, fused in ((False, False), (True, False), (False, True), (True, True)):
    mode = f"cuda{' graphs' * graphs}{' fused' * fused}"
    try:
        gpu = TorchLSTM(cpu.cfg).double().cuda()
        gpu.load_state_dict(cpu.state_dict())
        if graphs:
            gpu.use_cuda_graphs()
        if fused:
            gpu.use_fused_steps()
        for x in batches:
            for m in (cpu, gpu):
                m.zero_grad()
                d = m.output.weight.device
                m(x.to(d), targets=x.to(d), ignore_index=0).nll.sum().backward()
            worst = max(((p.grad - q.grad.cpu()).abs().max() / p.grad.abs().max()).item()
                        for p, q in zip(cpu.parameters(), gpu.parameters(), strict=True))
            print(f"torch-lstm {mode} vs cpu, batch {tuple(x.shape)}: max relative gradient difference {worst:.1e}")
            if not worst < 1e-9:
                failed.append(mode)
    except Exception as e:  # report and go on to the next mode
        print(f"torch-lstm {mode}: {type(e).__name__}: {e}")
        failed.append(mode)
assert not failed, failed
PY
# Speed against cuDNN at batch 64 and 1024, float32 (issue 7): torch-lstm eager, with fused steps, from
# CUDA graphs, and both (at batch 1024, where launches weigh less, eager and both only).
bench() {
  # shellcheck disable=SC2086  # $2 is zero, one or two flags
  poemctl bench --device cuda $2 --models cudnn-lstm,torch-lstm --batch-size "$1" --steps "$3" --repeats 2 \
    "${D[@]}" || echo "FAILED: bench --batch-size $1 $2"
}
if [[ " $PARTS " == *" speed "* ]]; then
  for modes in "" "--fused-steps" "--cuda-graphs" "--cuda-graphs --fused-steps"; do bench 64 "$modes" 30; done
  for modes in "" "--cuda-graphs --fused-steps"; do bench 1024 "$modes" 10; done
fi
[[ " $PARTS " == *" bf16 "* ]] || exit 0
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
