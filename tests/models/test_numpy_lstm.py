import gc
import json
import re
import time
import weakref

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info
from typer.testing import CliRunner

from poemctl.cli import app
from poemctl.config import ModelConfig
from poemctl.gradcheck import gradcheck
from poemctl.models import cpu_steps, numpy_head, numpy_lstm, numpy_steps, numpy_threads
from poemctl.models.numpy_lstm import NumpyLSTM
from poemctl.models.torch_lstm import TorchLSTM
from tests.conftest import CORPUS, TINY_ARGS

CFG = ModelConfig(vocab_size=30, embedding=6, hidden=5)
runner = CliRunner()


def _pair():
    torch.manual_seed(0)
    a = NumpyLSTM(CFG).double()
    b = TorchLSTM(CFG).double()
    b.load_state_dict(a.state_dict())
    return a, b


def test_gradients_match_the_reference_autograd_and_finite_differences():
    for check in gradcheck(NumpyLSTM, seed=1):
        assert check.reference_rel_error <= 1e-10 and check.autograd_rel_error <= 1e-10, check
        assert check.finite_diff_rel_error <= 1e-4, check


@pytest.mark.parametrize("path", ["h", "C"])
def test_gradcheck_catches_a_missing_recurrent_path(monkeypatch, path):
    # the course's bug: the gradient does not flow back through W_*h into h_{t−1}, or through f into C_{t−1}
    if path == "h":
        real = numpy_steps.lstm_backward
        monkeypatch.setattr(
            numpy_steps, "lstm_backward", lambda dh, c, *a: real(dh, c._replace(w_hh=np.zeros_like(c.w_hh)), *a)
        )
    else:
        real_steps = numpy_steps.steps_for

        def steps_without_carry(cache):
            steps = real_steps(cache)
            backward = steps.backward
            steps.backward = lambda rows, dh, dc_in, d, dc_out: backward(rows, dh, 0 * dc_in, d, dc_out)
            return steps

        monkeypatch.setattr(numpy_steps, "steps_for", steps_without_carry)
    worst = max(c.autograd_rel_error for c in gradcheck(NumpyLSTM))
    assert worst > 1e-3


def test_gradcheck_command():
    result = runner.invoke(app, ["gradcheck", "--model", "numpy-lstm"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "lstm.weight_hh" in result.output


def test_logits_and_state_match_torch_lstm():
    a, b = _pair()
    tokens = torch.randint(0, 30, (3, 8))
    out_a, out_b = a(tokens), b(tokens)
    torch.testing.assert_close(out_a.logits, out_b.logits)
    torch.testing.assert_close(out_a.state[1], out_b.state[1])
    rest = a(tokens[:, 4:], state=a(tokens[:, :4]).state).logits
    torch.testing.assert_close(rest, out_b.logits[:, 4:])


def test_float32_by_default():
    torch.manual_seed(0)
    out = NumpyLSTM(CFG)(torch.randint(1, 30, (2, 5)), targets=torch.randint(1, 30, (2, 5)), ignore_index=0)
    assert out.nll.dtype == torch.float32


def _ppl(ckpt, model):
    result = runner.invoke(app, ["perplexity", str(ckpt), "--model", model])
    assert result.exit_code == 0, result.output
    return float(re.search(r"perplexity ([\d.]+)", result.output).group(1))


def test_checkpoints_are_interchangeable(trained, tmp_path):
    args = ["train", *TINY_ARGS, "--model", "numpy-lstm", "--max-steps", "8", "--corpus", str(CORPUS)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (numpy_run,) = (tmp_path / "runs").iterdir()
    for ckpt in (numpy_run / "best.safetensors", trained / "best.safetensors"):
        assert _ppl(ckpt, "torch-lstm") == pytest.approx(_ppl(ckpt, "numpy-lstm"), rel=1e-4)
        sample = runner.invoke(app, ["sample", "月", "--ckpt", str(ckpt), "--model", "numpy-lstm", "--seed", "2"])
        same = runner.invoke(app, ["sample", "月", "--ckpt", str(ckpt), "--model", "torch-lstm", "--seed", "2"])
        assert sample.exit_code == 0 and sample.output == same.output


def _losses(tmp_path, model):
    out = tmp_path / model
    args = ["train", *TINY_ARGS, "--model", model, "--max-steps", "200", "--epochs", "20", "--seq-len", "32"]
    args += ["--batch-size", "8", "--corpus", str(CORPUS)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--eval-every", "1000"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.slow
def test_training_parity_with_torch_lstm(tmp_path):
    a, b = _losses(tmp_path, "numpy-lstm"), _losses(tmp_path, "torch-lstm")
    assert len(a) == len(b) == 200
    worst = max(abs(x - y) / y for x, y in zip(a, b, strict=True))
    assert worst < 0.01, worst
    assert a[-1] < a[0] - 0.5  # and it did learn


def test_per_row_upstream_gradients_match_autograd():
    a, b = _pair()
    tokens = torch.randint(1, 30, (4, 7))
    targets = torch.randint(1, 30, (4, 7))
    targets[:, :2] = 0
    weights = torch.tensor([0.5, 2.0, -1.0, 3.0], dtype=torch.float64)  # not the uniform mean-loss case
    for m in (a, b):
        (m(tokens, targets=targets, ignore_index=0).nll * weights).sum().backward()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_large_logits_take_the_stable_softmax():
    a, b = (m.float() for m in _pair())  # float32: exp(200) overflows without the max subtraction
    with torch.no_grad():
        for m in (a, b):
            m.output.bias[3] = 200.0
    tokens, targets = torch.randint(1, 30, (2, 5)), torch.randint(1, 30, (2, 5))
    out_a, out_b = (m(tokens, targets=targets, ignore_index=0) for m in (a, b))
    assert torch.isfinite(out_a.nll).all()
    torch.testing.assert_close(out_a.nll, out_b.nll)
    for out in (out_a, out_b):
        out.nll.sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_single_threaded_inside_a_step_and_restored_after(monkeypatch):
    before = _blas_threads()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    seen = []
    real = numpy_steps.lstm_forward

    def spy(*args):
        seen.append(_blas_threads())
        return real(*args)

    monkeypatch.setattr(numpy_steps, "lstm_forward", spy)
    torch.manual_seed(0)
    model = NumpyLSTM(CFG)
    out = model(torch.randint(1, 30, (2, 5)), targets=torch.randint(1, 30, (2, 5)), ignore_index=0)
    out.nll.sum().backward()
    assert seen[0] == [1] * len(before), seen
    assert _blas_threads() == before


def test_one_thread_gives_the_same_step():
    torch.manual_seed(0)
    model = NumpyLSTM(CFG)
    tokens, targets = torch.randint(1, 30, (3, 6)), torch.randint(1, 30, (3, 6))
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            model.zero_grad()
            out = model(tokens, targets=targets, ignore_index=0)
            out.nll.sum().backward()
            results.append([out.nll.detach(), *(p.grad.clone() for p in model.parameters())])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


def _assert_same_step(a, b, tokens, targets):
    """a and b give the same losses and gradients on the batch (padding id 0)."""
    outs = [m(tokens, targets=targets, ignore_index=0) for m in (a, b)]
    torch.testing.assert_close(outs[0].nll, outs[1].nll)
    for out in outs:
        out.nll.sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("head_rows", [1, 3, 256])
def test_output_layer_in_blocks_beside_the_recurrence_matches_torch_lstm(monkeypatch, head_rows):
    monkeypatch.setattr(numpy_head, "HEAD_ROWS", head_rows)  # many blocks, some ending inside a step
    a, b = _pair()
    tokens, targets = torch.randint(1, 30, (4, 9)), torch.randint(1, 30, (4, 9))
    targets[1:, :3] = 0  # front padding: steps with one scored row, and rows that start late
    targets[0, 5] = 0
    _assert_same_step(a, b, tokens, targets)


def test_output_layer_gradients_arriving_late_still_reach_the_recurrence(monkeypatch):
    # the recurrence goes back through time while δh is still being computed: it must wait for each step's δh
    class SlowUrgent(numpy_threads.Backlog):
        def put(self, fn, part, urgent=False):
            if urgent:
                return super().put(lambda s: time.sleep(0.002) or fn(s), part, urgent)
            return super().put(fn, part, urgent)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(numpy_lstm, "Backlog", SlowUrgent)
    monkeypatch.setattr(numpy_head, "HEAD_ROWS", 2)
    try:
        test_output_layer_in_blocks_beside_the_recurrence_matches_torch_lstm(monkeypatch, 2)
    finally:
        torch.set_num_threads(threads)


def test_float32_with_the_c_steps_matches_float64():
    torch.manual_seed(0)
    a = NumpyLSTM(CFG)  # float32: the C steps
    b = TorchLSTM(CFG).double()
    b.load_state_dict(a.state_dict())
    tokens, targets = torch.randint(1, 30, (5, 9)), torch.randint(1, 30, (5, 9))
    tokens[1:, :4] = targets[1:, :3] = 0  # padded in front: a shared row, rows beginning at step 3
    outs = [m(tokens, targets=targets, ignore_index=0) for m in (a, b)]
    torch.testing.assert_close(outs[0].nll, outs[1].nll.float(), rtol=1e-5, atol=1e-5)
    for out in outs:
        out.nll.sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_float32_output_layer_exponentials_in_c_match_numpy(monkeypatch):
    assert cpu_steps.library() is not None, "the C must build on this machine (a C compiler is required)"
    monkeypatch.setattr(numpy_head, "HEAD_ROWS", 3)  # blocks split by 3 rows: sums written at offsets
    rng = np.random.default_rng(0)
    hs = rng.standard_normal((20, 5), dtype=np.float32)  # packed hidden states, H = 5
    at, target = rng.permutation(20)[:13], rng.integers(0, 37, 13)  # 13 scored rows, V = 37
    w_aug = rng.standard_normal((6, 37), dtype=np.float32)
    heads = [numpy_head.ExpLogits(hs, at, w_aug, target) for _ in range(2)]
    assert heads[0].lib is not None
    heads[1].lib = None  # NumPy's exp2 and BLAS sums
    for head in heads:
        for s in (slice(0, 5), slice(5, 12), slice(12, 13)):
            head.block(s)
    (exps, sums, nll), (exps_np, sums_np, nll_np) = (head.finish() for head in heads)
    np.testing.assert_allclose(exps, exps_np, rtol=1e-6)
    np.testing.assert_allclose(sums, sums_np, rtol=1e-6)
    np.testing.assert_allclose(nll, nll_np, rtol=1e-6)


@pytest.mark.parametrize("case", ["all padding", "one step", "leading runs of any token"])
def test_edge_batches_match_torch_lstm(case):
    a, b = _pair()
    g = torch.Generator().manual_seed(3)
    ids = {  # (low, high, shape) of the random inputs and targets
        "all padding": (0, 1, (3, 4)),
        "one step": (1, 30, (2, 1)),
        "leading runs of any token": (0, 3, (6, 5)),  # three characters: rows share runs of one that is not padding
    }[case]
    tokens, targets = (torch.randint(*ids, generator=g) for _ in range(2))
    _assert_same_step(a, b, tokens, targets)


def test_tensors_from_the_bridge_hold_no_numpy_arrays(monkeypatch):
    # A tensor from torch.from_numpy holds its array, and freeing it takes the GIL: gloo frees gathered tensors
    # on its own threads, which aborted a rank at exit. So every array the NumPy code returns must be free
    # while the tensors made from it live on.
    alive = []

    def watched(fn):
        def run(*args):
            out = fn(*args)
            alive.extend(weakref.ref(a) for a in out if isinstance(a, np.ndarray))  # not the loss's cache
            return out

        return run

    for name in ["loss_forward", "loss_backward", "logits_forward"]:
        monkeypatch.setattr(NumpyLSTM, name, staticmethod(watched(getattr(NumpyLSTM, name))))
    model, _ = _pair()
    tokens = torch.randint(1, CFG.vocab_size, (3, 7))
    out = model(tokens[:, :-1], targets=tokens[:, 1:])
    out.nll.sum().backward()
    logits = model(tokens)
    gc.collect()
    assert len(alive) == 6 + 2 + 3
    assert not [ref for ref in alive if ref() is not None]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert out.count.sum() > 0 and torch.isfinite(logits.logits).all()
