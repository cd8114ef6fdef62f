"""Perplexity: exp(mean cross-entropy) over the targets that are not padding."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from poemctl.models.base import PoemModel


def batches(rows: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """Batches of (N, L) rows; each batch is a 1-tuple of (B, L) rows."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(rows), batch_size=batch_size, shuffle=shuffle, generator=g)


def split_batch(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) rows → inputs rows[:, :-1] and targets rows[:, 1:] (characters 1..L-1 and 2..L)."""
    rows = rows.long()
    return rows[:, :-1], rows[:, 1:]


@torch.no_grad()
def total_nll(model: PoemModel, loader, pad_id: int, gather=None) -> tuple[float, int]:
    """Summed NLL and number of scored targets over loader; gather merges ranks (Accelerate)."""
    was_training = model.training
    model.eval()
    nll_sum, count = 0.0, 0
    for (rows,) in loader:
        inputs, targets = split_batch(rows)
        out = model(inputs, targets=targets, ignore_index=pad_id)
        nll, n = (out.nll, out.count) if gather is None else gather((out.nll, out.count))
        nll_sum += nll.double().sum().item()
        count += int(n.sum().item())
    model.train(was_training)
    return nll_sum, count


def perplexity(nll_sum: float, count: int) -> float:
    """exp(nll_sum / count); nan for no targets."""
    return math.exp(nll_sum / count) if count else math.nan
