"""Gradient check: a model's gradients against two truths and against centred finite differences.

The truths: numpy_reference.py (docs/model.md's BPTT by hand, plainly, the version to read) and AutogradLSTM
below (the LSTM cell step by step, every gradient by torch autograd). They share no code, so a mistake
in the hand derivation cannot hide in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from poemctl.config import ModelConfig
from poemctl.models.base import PoemModel, State
from poemctl.models.numpy_reference import NumpyReference


class AutogradLSTM(PoemModel):
    """The reference: the LSTM cell step by step, F.cross_entropy, every gradient by autograd."""

    def hidden_states(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """(B, T) ids → (B, T, H), one autograd-recorded step at a time."""
        xw = F.linear(F.embedding(tokens, self.embedding_weight()), self.lstm.weight_ih, self.lstm.bias)  # (B, T, 4H)
        h, c = state if state is not None else self.zero_state(tokens.shape[0], tokens.device, xw.dtype)
        hs = []
        for xw_t in xw.unbind(1):
            i, f, g, o = (xw_t + h @ self.lstm.weight_hh.t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
            h = torch.sigmoid(o) * torch.tanh(c)  # h_t = o ⊙ tanh(C_t)
            hs.append(h)
        return torch.stack(hs, dim=1), (h, c)

    def scored_nll(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The output layer and F.cross_entropy, by autograd (no hand-written head)."""
        return F.cross_entropy(self.output(h), target, reduction="none")


@dataclass(frozen=True)
class ParamCheck:
    """The check of one parameter tensor."""

    name: str
    reference_rel_error: float  # max |g − g_ref| / max(|g_ref|) over all entries, against numpy_reference
    autograd_rel_error: float  # the same against AutogradLSTM
    finite_diff_rel_error: float  # max relative error over the sampled entries


MASK_SEED = 12345  # every forward draws its dropout masks from this seed: the same masks in every model


def _loss(model: PoemModel, tokens, targets, pad: int) -> torch.Tensor:
    torch.manual_seed(MASK_SEED)
    out = model(tokens, targets=targets, ignore_index=pad)
    return out.nll.sum() / out.count.sum()


def _grads(model: PoemModel, tokens, targets, pad: int) -> dict[str, torch.Tensor]:
    model.zero_grad()
    _loss(model, tokens, targets, pad).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def gradcheck(
    model_cls: type[PoemModel],
    *,
    vocab: int = 23,
    embedding: int = 6,
    hidden: int = 5,
    batch: int = 3,
    steps: int = 9,
    samples: int = 6,
    eps: float = 1e-6,
    seed: int = 0,
    dropout: float = 0.0,
) -> list[ParamCheck]:
    """Check model_cls in float64 on a random batch with front padding, against NumpyReference and AutogradLSTM;
    with dropout, embedding and output dropout of that probability (the same masks in every model)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=vocab, embedding=embedding, hidden=hidden, embedding_dropout=dropout, output_dropout=dropout
    )
    model = model_cls(cfg).double()
    truths = [NumpyReference(cfg).double(), AutogradLSTM(cfg).double()]
    for truth in truths:
        truth.load_state_dict(model.state_dict())
    pad = 0
    tokens = torch.randint(1, vocab, (batch, steps))
    targets = torch.randint(1, vocab, (batch, steps))
    for b in range(batch):  # rows padded in front, as in training
        tokens[b, : b * 2] = pad
        targets[b, : b * 2] = pad
    grads = _grads(model, tokens, targets, pad)
    hand, auto = (_grads(truth, tokens, targets, pad) for truth in truths)
    gen = torch.Generator().manual_seed(seed)
    checks = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            errors = [
                ((grads[name] - ref[name]).abs().max() / ref[name].abs().max().clamp(min=1e-12)).item()
                for ref in (hand, auto)
            ]
            flat, gflat = p.view(-1), grads[name].view(-1)
            worst = 0.0
            live = (gflat.abs() > 1e-9).nonzero()[:, 0]  # entries the batch reaches (not unused characters)
            for k in live[torch.randint(len(live), (samples,), generator=gen)].tolist():
                old = flat[k].item()
                flat[k] = old + eps
                up = _loss(model, tokens, targets, pad).item()
                flat[k] = old - eps
                down = _loss(model, tokens, targets, pad).item()
                flat[k] = old
                numeric = (up - down) / (2 * eps)
                denom = max(abs(numeric), abs(gflat[k].item()))
                worst = max(worst, abs(numeric - gflat[k].item()) / denom)
            checks.append(ParamCheck(name, *errors, worst))
    return checks
