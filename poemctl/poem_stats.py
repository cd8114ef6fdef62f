"""Statistics over generated poems: form validity, rhyme, tones, copying from the training poems, diversity."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from poemctl.data import is_normal
from poemctl.prosody import Prosody


@dataclass(frozen=True)
class PoemStats:
    """Rates over N poems (each in [0, 1]) and the time per poem."""

    poems: int
    form_valid: float  # exactly `lines` lines of `chars` normal characters
    rhymed: float  # even lines (and line 1 if it can) end in one 平声 rhyme group
    tonal: float  # follows a regular 平仄 pattern
    copy_rate: float  # share of lines found verbatim in the training poems (nan: no corpus to look in)
    distinct_1: float  # distinct characters / characters
    distinct_2: float  # distinct in-line bigrams / bigrams
    ms_per_poem: float

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def valid_form(poem: list[str], lines: int, chars: int) -> bool:
    """Exactly `lines` lines of `chars` normal characters."""
    return len(poem) == lines and all(len(x) == chars and all(map(is_normal, x)) for x in poem)


def line_set(training_text: list[str], chars: int) -> set[str]:
    """Every run of `chars` characters in the training poems: a line found here is copied."""
    return {t[i : i + chars] for t in training_text for i in range(len(t) - chars + 1)}


def poem_stats(poems, lines: int, chars: int, seconds: float, seen: set[str] | None, prosody: Prosody) -> PoemStats:
    """The statistics of poems (lists of lines) written in `seconds`; seen: line_set of the training poems, or
    None where there is none (the copy rate is then nan)."""
    n = len(poems)
    all_lines = [line for p in poems for line in p]
    unigrams = [ch for line in all_lines for ch in line]
    bigrams = [line[i : i + 2] for line in all_lines for i in range(len(line) - 1)]
    return PoemStats(
        poems=n,
        form_valid=sum(valid_form(p, lines, chars) for p in poems) / n,
        rhymed=sum(prosody.rhymed(p) for p in poems) / n,
        tonal=sum(prosody.tonal(p) for p in poems) / n,
        copy_rate=sum(line in seen for line in all_lines) / max(len(all_lines), 1) if seen is not None else math.nan,
        distinct_1=len(set(unigrams)) / max(len(unigrams), 1),
        distinct_2=len(set(bigrams)) / max(len(bigrams), 1),
        ms_per_poem=seconds * 1000 / n,
    )
