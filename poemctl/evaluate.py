"""Write N poems from a checkpoint and score them: form, rhyme, tones, copying, diversity, time per poem."""

from __future__ import annotations

import time
from dataclasses import replace

from poemctl.config import SampleConfig
from poemctl.data import load_corpus
from poemctl.poem_stats import PoemStats, line_set, poem_stats
from poemctl.prosody import Prosody
from poemctl.sampling import write_poems

STARTS = "月山春风花秋江云日夜"  # the start characters taken in turn when none is given


def evaluate(model, meta, cfg: SampleConfig, first: str = "", corpus: str | None = None) -> PoemStats:
    """cfg.num poems from the loaded checkpoint (model, meta), starting with first (default: STARTS in turn,
    one batch each), scored against the training poems of the checkpoint's corpus (or of corpus)."""
    data = meta.config.data if corpus is None else replace(meta.config.data, corpus=corpus)
    train_rows = load_corpus(data, vocab=meta.vocab).train
    pad = meta.vocab.pad_id
    seen = line_set([meta.vocab.decode(r[r != pad].tolist()) for r in train_rows], cfg.chars)
    prosody = Prosody()
    starts = list(first) or [c for c in STARTS if c in meta.vocab]
    poems, seconds = [], 0.0
    for i, start in enumerate(starts):
        share = cfg.num // len(starts) + (i < cfg.num % len(starts))
        if share == 0:
            continue
        t = time.perf_counter()
        poems += write_poems(
            model,
            meta.vocab,
            start,
            replace(cfg, num=share, seed=(cfg.seed or 0) + i),
            seq_len=data.seq_len,
            keep_commas=data.keep_commas,
            control_tokens=data.control_tokens,
            prosody=prosody,
        )
        seconds += time.perf_counter() - t
    return poem_stats(poems, len(cfg.acrostic) or cfg.lines, cfg.chars, seconds, seen, prosody)
