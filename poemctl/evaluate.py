"""Poems scored: form, rhyme, tones, copying, diversity. Written by a checkpoint, read from a file, or real.

The copy rate counts lines found verbatim in the training poems: every training poem of the checkpoint's
corpus and preset, whatever form filter its last stage had (a quatrain stage's model read the whole
corpus before it).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

from poemctl import control, progress
from poemctl.config import DataConfig, SampleConfig
from poemctl.corpus import corpus_files
from poemctl.data import split_poems
from poemctl.errors import PoemctlError
from poemctl.poem_stats import PoemStats, line_set, poem_stats
from poemctl.prosody import Prosody
from poemctl.sampling import write_poems

STARTS = "月山春风花秋江云日夜"  # the start characters taken in turn when none is given


def _data(meta, corpus: str | None) -> DataConfig:
    data = meta.config.data
    return data if corpus is None else replace(data, corpus=corpus)


def training_lines(data: DataConfig, chars: int, say=None) -> set[str] | None:
    """Every run of chars characters in the training poems of data's corpus and preset (no form filter). Where
    the corpus is not there: with say (the checkpoint's own corpus, e.g. the bundled model's on a machine
    without it), None, saying why; without say (a corpus the user named), the error."""
    try:
        corpus_files(data.corpus)  # is it there?
    except PoemctlError as e:
        if say is None:
            raise
        say(f"warning: the copy rate is not measured: {e}")
        return None
    train, _ = split_poems(replace(data, forms=()))
    return line_set([control.without_tokens(p) for p in train], chars)


def evaluate(model, meta, cfg: SampleConfig, first: str = "", corpus: str | None = None, say=None) -> PoemStats:
    """cfg.num poems from the loaded checkpoint (model, meta), starting with first (default: STARTS in turn,
    one batch each), scored against the training poems of the checkpoint's corpus (or of corpus)."""
    data = _data(meta, corpus)
    seen = training_lines(data, cfg.chars, say)
    prosody = Prosody()
    starts = [first] if first else [c for c in STARTS if c in meta.vocab]
    poems, seconds = [], 0.0
    with progress.bar("writing poems", cfg.num) as advance:
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
                data=data,
                prosody=prosody,
            )
            seconds += time.perf_counter() - t
            advance(share)
    return poem_stats(poems, len(cfg.acrostic) or cfg.lines, cfg.chars, seconds, seen, prosody)


def read_poem_file(path: str | Path) -> list[list[str]]:
    """The poems of a UTF-8 file, one a line, each cut into lines at its punctuation (as `sample` prints them,
    with the lines of a poem on one line, or one poem per paragraph)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PoemctlError(f"cannot read {path}: {e}") from None
    blocks = [b for b in text.split("\n\n") if b.strip()] if "\n\n" in text else text.splitlines()
    poems = [control.lines_of("".join(b.split())) for b in blocks]
    poems = [p for p in poems if p]
    if not poems:
        raise PoemctlError(f"{path} holds no poem")
    return poems


def score_poems(meta, poems: list[list[str]], lines: int, chars: int, corpus: str | None = None, say=None) -> PoemStats:
    """Poems given as text (a file, real ones), scored like the checkpoint's own (no time per poem)."""
    return poem_stats(poems, lines, chars, 0.0, training_lines(_data(meta, corpus), chars, say), Prosody())


def real_poems(meta, lines: int, chars: int, num: int, seed: int = 0, corpus: str | None = None) -> list[list[str]]:
    """num real poems of lines × chars from the test split of the checkpoint's corpus, drawn with seed."""
    data = replace(_data(meta, corpus), forms=(), keep_commas=True, control_tokens=False, rhyme_marks=False)
    _, test = split_poems(data)
    found = [ls for p in test if len(ls := control.lines_of(p)) == lines and all(len(x) == chars for x in ls)]
    if not found:
        raise PoemctlError(f"the test split holds no poem of {lines} lines of {chars} characters")
    random.Random(seed).shuffle(found)
    return found[:num]
