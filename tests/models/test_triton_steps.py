"""torch-lstm's fused Triton steps: run here in Triton's interpreter (tests/conftest.py), and compiled for a GPU."""

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="--fused-steps needs Triton (scripts/setup.sh --test installs it on Linux x86-64)")

from poemctl.config import ModelConfig  # noqa: E402
from poemctl.models import triton_steps  # noqa: E402
from poemctl.models.torch_lstm import CudaGraphs, Recurrence, TorchLSTM  # noqa: E402
from tests.models.test_torch_lstm import (  # noqa: E402
    CFG,
    _model,
    _replay_on_cpu,
    check_scan_gradients,
)

FUSED = Recurrence(forward=triton_steps.forward_steps, backward=triton_steps.backward_steps)


@pytest.mark.slow
def test_fused_scan_matches_finite_differences_with_a_starting_state():
    check_scan_gradients(FUSED)


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_steps_give_the_eager_losses_and_gradients(monkeypatch, graphs, dtype):
    launched = []
    real = triton_steps._launch
    monkeypatch.setattr(triton_steps, "_launch", lambda kernel, *a: launched.append(kernel) or real(kernel, *a))
    monkeypatch.setattr(CudaGraphs, "_capture", staticmethod(_replay_on_cpu))
    eager, fused = _model().to(dtype), _model().to(dtype)
    fused.use_fused_steps()
    if graphs:  # the fused steps replayed from CUDA graphs (a stand-in capture on the CPU), as on a GPU
        fused.use_cuda_graphs()
    x, y = torch.randint(1, 30, (4, 7)), torch.randint(0, 30, (4, 7))
    outs = [m(x, targets=y, ignore_index=0) for m in (eager, fused)]
    for out in outs:
        out.nll.sum().backward()
    exact = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(outs[0].nll, outs[1].nll, **exact)
    for (name, p), q in zip(eager.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, **exact, msg=name)
    names = [k.fn.__name__ for k in launched]
    runs = 2 if graphs else 1  # a capture computes its steps once more for the graph's own outputs
    assert names == ["_forward_cell"] * 7 * runs + ["_backward_cell"] * 7 * runs


def test_fused_steps_train_under_bf16_autocast():
    m, reference = TorchLSTM(CFG), TorchLSTM(CFG)
    reference.load_state_dict(m.state_dict())
    m.use_fused_steps()
    tokens = torch.randint(1, 30, (4, 8))
    for model in (m, reference):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(tokens, targets=tokens, ignore_index=0)
        out.nll.sum().backward()
    for p, q in zip(m.parameters(), reference.parameters(), strict=True):
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        torch.testing.assert_close(p.grad, q.grad, rtol=0.05, atol=0.02)


@pytest.mark.slow
def test_kernels_compile_for_a_hopper_gpu():
    # Triton compiles to a cubin without a GPU: the real code path (TTIR → PTX → ptxas), not the interpreter
    code = r"""
import re
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from poemctl.models import triton_steps as ts
for kernel, n_ptrs in ((ts._forward_cell, 5), (ts._backward_cell, 7)):
    names = kernel.arg_names
    for ptr, acc, bits in (("fp32", tl.float32, "32"), ("fp64", tl.float64, "64"), ("bf16", tl.float32, "16")):
        sig = {name: "*" + ptr for name in names[:n_ptrs]}
        sig |= {"B": "i32", "H": "i32", "ROWS": "constexpr", "COLS": "constexpr", "ACC": "constexpr"}
        # as the launcher specialises them for H = 128: aligned pointers, H a multiple of 16
        aligned = {(i,): [["tt.divisibility", 16]] for i in (*range(n_ptrs), n_ptrs + 1)}
        src = ASTSource(fn=kernel, signature=sig, constexprs={"ROWS": 2, "COLS": 128, "ACC": acc}, attrs=aligned)
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
        assert len(compiled.asm["cubin"]) > 1000
        # no global load or store moves a single element: each is a vector (.v2, .v4) or packs several
        moves = re.findall(r"(?:ld|st)\.global((?:\.\w+)*)", compiled.asm["ptx"])
        single = [m for m in moves if not re.search(r"\.v[248]", m) and m.endswith(bits)]
        assert moves and not single, (kernel.__name__, ptr, moves)
        print(kernel.__name__, ptr, "ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 6, result.stdout


@pytest.mark.slow
def test_fused_steps_at_the_course_size():
    # the blocks training uses (2 rows × 128 hidden units, 32 programs), not the tiny tests' masked ones
    torch.manual_seed(0)
    eager = TorchLSTM(ModelConfig(vocab_size=200))
    fused = TorchLSTM(eager.cfg)
    fused.load_state_dict(eager.state_dict())
    fused.use_fused_steps()
    x, y = torch.randint(1, 200, (64, 6)), torch.randint(0, 200, (64, 6))
    outs = [m(x, targets=y, ignore_index=0) for m in (eager, fused)]
    for out in outs:
        out.nll.sum().backward()
    torch.testing.assert_close(outs[0].nll, outs[1].nll, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(eager.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
