"""The plain NumPy LSTM (numpy_reference.py): its gradients, and the fast numpy-lstm equal to it."""

import inspect

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from poemctl.cli import app
from poemctl.config import ModelConfig
from poemctl.gradcheck import gradcheck
from poemctl.models import numpy_reference
from poemctl.models.numpy_lstm import NumpyLSTM
from poemctl.models.numpy_reference import NumpyReference
from tests.conftest import CORPUS, TINY_ARGS

CFG = ModelConfig(vocab_size=30, embedding=6, hidden=5)


def test_gradients_match_autograd_and_finite_differences():
    for seed in (0, 1):
        for check in gradcheck(NumpyReference, seed=seed):
            assert check.autograd_rel_error <= 1e-12, check
            assert check.finite_diff_rel_error <= 1e-4, check


@pytest.mark.parametrize("line", ["dh_next = dz @ w_h", "dc_next = dc * f"])
def test_gradcheck_catches_a_missing_recurrent_path(monkeypatch, line):
    # the course's bug, in the reference: no gradient through W_*h into h_{t−1}, or through f into C_{t−1}
    source = inspect.getsource(numpy_reference.lstm_backward)
    assert line in source
    broken = source.replace(line, line.split(" = ")[0] + " = 0.0 * dc")
    namespace = dict(vars(numpy_reference))
    exec(compile(broken, numpy_reference.__file__, "exec"), namespace)
    monkeypatch.setattr(numpy_reference, "lstm_backward", namespace["lstm_backward"])
    assert max(c.autograd_rel_error for c in gradcheck(NumpyReference)) > 1e-3


def _pair():
    torch.manual_seed(0)
    fast = NumpyLSTM(CFG).double()
    plain = NumpyReference(CFG).double()
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def _loss_and_grads(model, tokens, targets):
    model.zero_grad()
    out = model(tokens, targets=targets, ignore_index=0)
    # each row's NLL with its own weight, so that a row's upstream gradient reaches only that row
    (out.nll * torch.arange(1, len(tokens) + 1, dtype=out.nll.dtype)).sum().backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "case",
    ["front padding", "no padding", "one row all padding", "one step", "rows sharing runs of another token"],
)
def test_fast_numpy_lstm_equals_the_reference(case):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, CFG.vocab_size, (5, 9), generator=g)
    targets = torch.randint(1, CFG.vocab_size, (5, 9), generator=g)
    if case == "front padding":
        for b in range(5):
            tokens[b, : 2 * b] = targets[b, : 2 * b - 1 if b else 0] = 0
    elif case == "one row all padding":
        tokens[2], targets[2] = 0, 0
        tokens[3, :4] = targets[3, :3] = 0
    elif case == "one step":
        tokens, targets = tokens[:, :1], targets[:, :1]
    elif case == "rows sharing runs of another token":
        tokens[:, :3] = 7
        tokens[1:, :5] = 7
    fast, plain = _pair()
    out_f, grads_f = _loss_and_grads(fast, tokens, targets)
    out_p, grads_p = _loss_and_grads(plain, tokens, targets)
    assert torch.equal(out_f.count, out_p.count)
    torch.testing.assert_close(out_f.nll, out_p.nll, rtol=1e-10, atol=1e-12)
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fast_numpy_lstm_logits_and_state_equal_the_reference():
    fast, plain = _pair()
    tokens = torch.randint(0, CFG.vocab_size, (3, 8))
    first_f, first_p = fast(tokens[:, :4]), plain(tokens[:, :4])
    for a, b in [(first_f.logits, first_p.logits), *zip(first_f.state, first_p.state, strict=True)]:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    rest_f, rest_p = fast(tokens[:, 4:], state=first_f.state), plain(tokens[:, 4:], state=first_p.state)
    torch.testing.assert_close(rest_f.logits, rest_p.logits, rtol=1e-10, atol=1e-12)


def test_the_reference_is_a_model_that_trains_and_writes(tmp_path):
    runner = CliRunner()
    args = ["train", *TINY_ARGS, "--model", "numpy-reference", "--max-steps", "3", "--corpus", str(CORPUS)]
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    sample = runner.invoke(app, ["sample", "月", "--ckpt", str(run_dir / "last.safetensors"), "--seed", "1"])
    assert sample.exit_code == 0, sample.output
    assert [len(line) for line in sample.output.split()] == [8, 8, 8, 8]  # 7 characters and a mark


def test_reference_softmax_survives_large_logits():
    y = numpy_reference.softmax(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0]])
