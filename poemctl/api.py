"""poemctl as a library: load a model, write poems, score text.

    import poemctl

    poet = poemctl.load()                  # the latest run's best checkpoint under runs/, else the bundled model
    print(poet.write("月", num=2, seed=1)[0])
    print(poet.perplexity(["床前明月光，疑是地上霜。举头望明月，低头思故乡。"]))

Errors are poemctl.PoemctlError with the same one-line messages the command line prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from poemctl import checkpoint
from poemctl.checkpoint import CheckpointMeta
from poemctl.config import SampleConfig
from poemctl.models.base import PoemModel
from poemctl.sampling import format_poem, write_poems
from poemctl.scoring import score_texts


@dataclass
class Poet:
    """A loaded checkpoint: its model, its metadata (vocabulary, whole training configuration) and its path."""

    model: PoemModel
    meta: CheckpointMeta
    path: Path
    bundled: bool  # the model shipped with poemctl (no checkpoint given, no run found)

    def write(
        self,
        first: str = "月",
        *,
        lines: int = 4,
        chars: int = 7,
        num: int = 1,
        rhyme: bool = False,
        tones: bool = False,
        seed: int | None = None,
        strategy: str = "",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        acrostic: str = "",
        rhyme_group: str = "",
    ) -> list[str]:
        """num poems that begin with first (a character, or more: 春风, a whole line), each one string of lines
        ending in "，" or "。" and joined by newlines; the options are `poemctl sample`'s (see its --help)."""
        cfg = SampleConfig(
            lines=lines,
            chars=chars,
            num=num,
            seed=seed,
            strategy=strategy,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            acrostic=acrostic,
            rhyme=rhyme,
            tones=tones,
            rhyme_group=rhyme_group,
        )
        poems = write_poems(self.model, self.meta.vocab, first, cfg, data=self.meta.config.data)
        return [format_poem(p) for p in poems]

    def perplexity(self, texts: Iterable[str] | str) -> float:
        """The model's perplexity on poems (one a string; a single string is one poem), preprocessed as its
        training text was."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return score_texts(self.model, self.meta, texts).perplexity


def load(ckpt: str | Path | None = None, *, runs: str | Path = "runs", model: str | None = None) -> Poet:
    """The checkpoint ckpt, else the best of the most recent run under runs, else the model bundled with
    poemctl; model runs it in another model plugin than the one that trained it (any checkpoint loads into
    any model)."""
    path, bundled = checkpoint.find(ckpt, runs)
    net, meta = checkpoint.load(path, model)
    return Poet(net, meta, path, bundled)
