"""Tied embeddings and output layer (models/base.py): one Parameter, both gradients, both checkpoint names."""

import pytest
import torch

from poemctl.checkpoint import unshared
from poemctl.config import ModelConfig
from poemctl.errors import PoemctlError
from poemctl.registry import MODELS

NAMES = ["numpy-reference", "numpy-lstm", "torch-lstm", "cudnn-lstm"]


def test_tying_needs_embedding_equal_to_hidden():
    with pytest.raises(PoemctlError, match="--tie-weights needs --embedding equal to --hidden, got 6 and 5"):
        ModelConfig(vocab_size=30, embedding=6, hidden=5, tie_weights=True)


@pytest.mark.parametrize("name", NAMES)
def test_tied_gradient_is_the_sum_of_both_uses(name):
    torch.manual_seed(0)
    tied = MODELS.get(name)(ModelConfig(vocab_size=30, embedding=5, hidden=5, tie_weights=True)).double()
    assert tied.output.weight is tied.embedding.weight
    assert len(list(tied.parameters())) == 5  # one matrix fewer than untied
    free = MODELS.get(name)(ModelConfig(vocab_size=30, embedding=5, hidden=5)).double()
    free.load_state_dict(tied.state_dict())
    tokens, targets = torch.randint(1, 30, (3, 6)), torch.randint(0, 30, (3, 6))
    for m in (tied, free):
        m(tokens, targets=targets, ignore_index=0).nll.sum().backward()
    expected = free.embedding.weight.grad + free.output.weight.grad
    torch.testing.assert_close(tied.embedding.weight.grad, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tied.lstm.weight_hh.grad, free.lstm.weight_hh.grad, rtol=1e-10, atol=1e-12)


def test_tied_state_is_saved_as_two_tensors():
    model = MODELS.get("torch-lstm")(ModelConfig(vocab_size=30, embedding=5, hidden=5, tie_weights=True))
    tensors = unshared(dict(model.state_dict()))
    assert tensors["output.weight"].data_ptr() != tensors["embedding.weight"].data_ptr()
    assert torch.equal(tensors["output.weight"], tensors["embedding.weight"])
    assert tensors["lstm.bias"].data_ptr() == model.lstm.bias.data_ptr()  # only shared memory is copied
