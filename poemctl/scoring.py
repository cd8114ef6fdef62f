"""Perplexity: exp(mean cross-entropy) over the targets that are not padding, of a model or a checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from poemctl import progress
from poemctl.data import batches, encode_rows, load_corpus, prepare_poems, split_batch
from poemctl.errors import PoemctlError
from poemctl.models.base import PoemModel


@torch.no_grad()
def total_nll(model: PoemModel, loader, pad_id: int, gather=None, on_batch=None) -> tuple[float, int]:
    """Summed NLL and number of scored targets over loader; gather merges ranks (Accelerate); on_batch() is
    called after each batch (progress)."""
    was_training = model.training
    model.eval()
    nll_sum, count = 0.0, 0
    for (rows,) in loader:
        inputs, targets = split_batch(rows)
        out = model(inputs, targets=targets, ignore_index=pad_id)
        nll, n = (out.nll, out.count) if gather is None else gather((out.nll, out.count))
        nll_sum += nll.double().sum().item()
        count += int(n.sum().item())
        if on_batch is not None:
            on_batch()
    model.train(was_training)
    return nll_sum, count


def perplexity(nll_sum: float, count: int) -> float:
    """exp(nll_sum / count); nan for no targets."""
    return math.exp(nll_sum / count) if count else math.nan


@dataclass(frozen=True)
class Score:
    """A checkpoint's perplexity on some poems, and what was scored."""

    perplexity: float
    tokens: int  # scored targets
    poems: int
    source: str  # "test split", "train split" or the file's path
    other_corpus: bool  # the split was rebuilt from a corpus other than the checkpoint's
    unknown: int = 0  # scored targets that are <unk>: the vocabulary does not know them

    @property
    def unknown_share(self) -> float:
        """The share of scored characters the checkpoint's vocabulary does not know."""
        return self.unknown / max(self.tokens, 1)


def score_checkpoint(
    model: PoemModel, meta, split: str = "test", text: Path | None = None, corpus: str | None = None, batch_size=256
) -> Score:
    """Perplexity of a loaded checkpoint (model, meta) on its split, rebuilt from its metadata (and corpus, if
    given), or on a UTF-8 file of poems, one per line. <unk> is scored like any character, which makes a
    text the vocabulary does not know look easy: the Score counts them."""
    if split not in ("test", "train"):
        raise PoemctlError(f"--split must be test or train, got {split}")
    if batch_size < 1:
        raise PoemctlError(f"--batch-size must be at least 1, got {batch_size}")
    if text is not None:
        try:
            raw = Path(text).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise PoemctlError(f"cannot read {text}: {e}") from None
        return score_texts(model, meta, raw, str(text), batch_size)
    data_cfg = meta.config.data if corpus is None else replace(meta.config.data, corpus=corpus)
    data = load_corpus(data_cfg, vocab=meta.vocab)
    rows = data.test if split == "test" else data.train
    return score_rows(model, meta, rows, f"{split} split", batch_size, data.corpus_hash != meta.corpus_hash)


def score_texts(model: PoemModel, meta, texts: list[str], source: str = "texts", batch_size: int = 256) -> Score:
    """Perplexity of a loaded checkpoint on poems given as text, one a string (blank ones skipped),
    preprocessed by the checkpoint's own preset."""
    poems = prepare_poems(meta.config.data, [t for t in texts if t.strip()], source)
    rows = torch.from_numpy(encode_rows(poems, meta.vocab, meta.config.data.seq_len))
    return score_rows(model, meta, rows, source, batch_size)


def score_rows(
    model: PoemModel, meta, rows: torch.Tensor, source: str, batch_size: int = 256, other: bool = False
) -> Score:
    """Perplexity of a loaded checkpoint on encoded rows (N, T), e.g. a split already loaded; other: the rows
    come from a corpus other than the checkpoint's."""
    loader = batches(rows, batch_size)
    with progress.bar(f"scoring the {source}", len(loader)) as advance:
        nll, n = total_nll(model, loader, meta.vocab.pad_id, on_batch=advance)
    targets = rows[:, 1:]
    unknown = int(((targets == meta.vocab.unk_id) & (targets != meta.vocab.pad_id)).sum())
    return Score(perplexity(nll, n), n, len(rows), source, other, unknown)
