"""Post-hoc logit adjustment: a checkpoint whose output bias discounts the characters that are likely everywhere.

A language model trained by cross-entropy learns logits f(x)_y ≈ log p(y | x) + c(x). The course rule draws
uniformly from the five likeliest characters, so only their order matters, and in most contexts that order
is led by characters that are common everywhere (不, 一, 人, 风, 花): poems share many bigrams. The logit
adjustment of Menon et al. ("Long-tail learning via logit adjustment", ICLR 2021) ranks by

    f(x)_y − τ · log π_y        π_y: the share of y among the training split's characters

i.e. by p(y | x) / π_y^τ, which tilts the order towards the characters this context makes likelier than usual
(τ = 1 would rank by pointwise mutual information). Because the output layer has a bias b_y, the tilt is a
change of that bias alone: b_y − τ · log π_y. Training with the adjusted loss, cross-entropy of f + τ log π,
reaches the same model up to its initial bias (the gradients of b and b + τ log π are equal), which is why
this is done once, after training, on the checkpoint.

Only written characters are tilted: padding, <unk>, punctuation and control tokens keep their bias, so the
choices among control tokens (a poem's form, rhyme group, tone pattern) are the model's as trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from poemctl import checkpoint
from poemctl.data import is_normal, load_corpus
from poemctl.errors import PoemctlError
from poemctl.scoring import score_rows


@dataclass(frozen=True)
class Adjusted:
    """What adjust() wrote and what the tilt cost in perplexity (on the checkpoint's test split)."""

    path: Path
    tau: float  # this adjustment's τ
    total_tau: float  # with any adjustment the source already had
    perplexity_before: float
    perplexity_after: float


def character_prior(rows: torch.Tensor, vocab) -> torch.Tensor:
    """(V,) float64 log π: each token's share of the scored targets of rows (N, T), add-one smoothed so a
    character the split never shows gets the largest tilt rather than an infinite one."""
    targets = rows[:, 1:].flatten().long()
    targets = targets[targets != vocab.pad_id]
    counts = torch.bincount(targets, minlength=len(vocab)).double() + 1.0
    return (counts / counts.sum()).log()


def tilt(bias: torch.Tensor, log_prior: torch.Tensor, written: torch.Tensor, tau: float) -> torch.Tensor:
    """bias (V,) − τ · log π on the written characters (written: (V,) bool), the others unchanged."""
    shift = torch.where(written, -tau * log_prior, torch.zeros_like(log_prior))
    return (bias.double() + shift).to(bias.dtype)


def adjust(src: str | Path, tau: float, dst: str | Path, corpus: str | None = None) -> Adjusted:
    """Write src again at dst with its output bias tilted by τ (module docstring); dst's metadata records the
    total τ. The prior is rebuilt from the checkpoint's own training split (its corpus, or corpus if given)."""
    if not (math.isfinite(tau) and tau > 0):
        raise PoemctlError(f"--tau must be a number greater than 0, got {tau}")
    src, dst = Path(src), Path(dst)
    model, meta = checkpoint.load(src)
    data_cfg = meta.config.data if corpus is None else replace(meta.config.data, corpus=corpus)
    data = load_corpus(data_cfg, vocab=meta.vocab)
    if data.corpus_hash != meta.corpus_hash:
        raise PoemctlError(
            f"the corpus at {data_cfg.corpus} differs from the one {src} was trained on: its character "
            "frequencies would not be the model's; pass --corpus with that corpus"
        )
    before = score_rows(model, meta, data.test, "test split").perplexity
    written = torch.tensor([is_normal(t) for t in meta.vocab.tokens])
    log_prior = character_prior(data.train, meta.vocab)
    with torch.no_grad():
        model.output.bias.copy_(tilt(model.output.bias, log_prior, written, tau))
    after = score_rows(model, meta, data.test, "test split").perplexity
    meta = replace(meta, logit_adjust=meta.logit_adjust + tau, test_perplexity=after)
    checkpoint.save(dst, model, meta, dtype=checkpoint.stored_dtype(src))
    return Adjusted(dst, tau, meta.logit_adjust, before, after)
