#!/usr/bin/env bash
# The checks that need a GPU (issues 5 and 7), as one short script for a lent GPU machine; not run in CI.
# Usage: bash scripts/gpu_check.sh CORPUS_DIR   (prints the tables; about 8 minutes on one H100)
# On this workplace's device machines, prepare it first: scripts/gpu_prepare.sh says how.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:?corpus folder}
OUT=${OUT:-gpu-out}
D=(--corpus "$CORPUS" --cache-dir "$OUT/cache")
# torch-lstm's hand-written backward on the GPU, eager and from CUDA graphs (--cuda-graphs): same losses
# and gradients as on the CPU (float64), over three batches (the second replays the first's graphs).
python - <<'PY'
import torch
from poemctl.config import ModelConfig
from poemctl.models.torch_lstm import TorchLSTM
torch.manual_seed(0)
cpu = TorchLSTM(ModelConfig(vocab_size=300, hidden=32, embedding=16)).double()
batches = [torch.randint(1, 300, shape) for shape in ((8, 20), (8, 20), (5, 30))]
for graphs in (False, True):
    gpu = TorchLSTM(cpu.cfg).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    if graphs:
        gpu.use_cuda_graphs()
    for x in batches:
        for m in (cpu, gpu):
            m.zero_grad()
            m(x.to(m.output.weight.device), targets=x.to(m.output.weight.device), ignore_index=0).nll.sum().backward()
        worst = max(((p.grad - q.grad.cpu()).abs().max() / p.grad.abs().max()).item()
                    for p, q in zip(cpu.parameters(), gpu.parameters(), strict=True))
        print(f"torch-lstm cuda{' graphs' if graphs else ''} vs cpu, batch {tuple(x.shape)}: "
              f"max relative gradient difference {worst:.1e}")
        assert worst < 1e-9
PY
# Speed against cuDNN at batch 64 and 1024, float32 (issue 7): torch-lstm eager, then from CUDA graphs.
for b in 64 1024; do
  steps=$([ "$b" = 64 ] && echo 30 || echo 10)
  poemctl bench --device cuda --models cudnn-lstm,torch-lstm --batch-size "$b" --steps "$steps" --repeats 2 "${D[@]}"
  poemctl bench --device cuda --cuda-graphs --models cudnn-lstm,torch-lstm --batch-size "$b" --steps "$steps" \
    --repeats 2 "${D[@]}"
done
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
