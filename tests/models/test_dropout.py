"""Embedding and output dropout (models/base.py): the same masks in every model, and their gradients."""

import inspect

import pytest
import torch

from poemctl.config import ModelConfig
from poemctl.gradcheck import gradcheck
from poemctl.models import numpy_reference
from poemctl.registry import MODELS

MODELS_WITH_DROPOUT = ["numpy-reference", "numpy-lstm", "torch-lstm", "cudnn-lstm"]


@pytest.mark.parametrize("name", MODELS_WITH_DROPOUT)
def test_gradients_with_dropout_match_both_truths(name):
    for check in gradcheck(MODELS.get(name), dropout=0.3, seed=1):
        assert check.reference_rel_error <= 1e-10 and check.autograd_rel_error <= 1e-10, check
        assert check.finite_diff_rel_error <= 1e-4, check


def test_gradcheck_catches_output_dropout_left_out_of_a_backward(monkeypatch):
    source = inspect.getsource(numpy_reference.loss_backward)
    assert "* cache.keep" in source
    namespace = dict(vars(numpy_reference))
    exec(compile(source.replace("* cache.keep", ""), numpy_reference.__file__, "exec"), namespace)
    monkeypatch.setattr(numpy_reference.NumpyReference, "loss_backward", staticmethod(namespace["loss_backward"]))
    checks = gradcheck(MODELS.get("numpy-reference"), dropout=0.3, seed=1)
    assert max(c.autograd_rel_error for c in checks) > 1e-3


@pytest.mark.parametrize("name", MODELS_WITH_DROPOUT)
def test_dropout_acts_in_training_only(name):
    torch.manual_seed(0)
    model = MODELS.get(name)(
        ModelConfig(vocab_size=30, embedding=6, hidden=5, output_dropout=0.5, embedding_dropout=0.5)
    )
    tokens, targets = torch.randint(1, 30, (4, 7)), torch.randint(1, 30, (4, 7))

    def loss(seed):
        torch.manual_seed(seed)
        return model(tokens, targets=targets, ignore_index=0).nll.sum().item()

    assert loss(1) != loss(2)  # training: masks differ with the seed
    model.eval()
    assert loss(1) == loss(2)
    plain = MODELS.get(name)(ModelConfig(vocab_size=30, embedding=6, hidden=5))
    plain.load_state_dict(model.state_dict())
    plain.eval()
    torch.manual_seed(1)
    assert plain(tokens, targets=targets, ignore_index=0).nll.sum().item() == pytest.approx(loss(1), rel=1e-6)


def test_every_model_draws_the_same_masks():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, embedding=6, hidden=5, output_dropout=0.4, embedding_dropout=0.4)
    models = [MODELS.get(n)(cfg).double() for n in MODELS_WITH_DROPOUT]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    tokens, targets = torch.randint(1, 30, (3, 6)), torch.randint(1, 30, (3, 6))
    losses = []
    for m in models:
        torch.manual_seed(7)
        losses.append(m(tokens, targets=targets, ignore_index=0).nll)
    for other in losses[1:]:
        torch.testing.assert_close(other, losses[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("field", ["embedding_dropout", "output_dropout"])
def test_dropout_must_be_a_probability_below_one(field):
    from poemctl.errors import PoemctlError

    with pytest.raises(PoemctlError, match=f"--{field.replace('_', '-')} must be in"):
        ModelConfig(**{field: 1.0})
