"""Writing poems: one character at a time, carrying (h, C) forward, by the course rule of SPEC.md."""

from __future__ import annotations

import torch

from poemctl.data import PAD, Vocab
from poemctl.errors import PoemctlError
from poemctl.models.base import PoemModel


def course_pick(probs: torch.Tensor, special: torch.Tensor, gen: torch.Generator) -> int:
    """The course rule: draw from the top 5; while the draw is special, draw again from the top 10."""
    top = torch.topk(probs, k=min(10, probs.numel())).indices
    first = True
    for _ in range(1000):
        pool = top[:5] if first else top
        pick = int(pool[torch.randint(len(pool), (1,), generator=gen)])
        if not special[pick]:
            return pick
        first = False
    # Every one of the top 10 is special: take the likeliest normal character instead.
    return int(torch.argmax(probs.masked_fill(special, -1.0)))


def line_end(vocab: Vocab, index: int, lines: int, keep_commas: bool) -> str | None:
    """The punctuation the model reads after line index (0-based), as in its training text."""
    mark = "。" if index % 2 == 1 or index == lines - 1 else ("，" if keep_commas else None)
    return mark if mark in vocab else None


@torch.no_grad()
def write_poems(
    model: PoemModel,
    vocab: Vocab,
    first: str,
    *,
    lines: int = 4,
    chars: int = 7,
    num: int = 1,
    seed: int | None = None,
    seq_len: int = 80,
    keep_commas: bool = False,
) -> list[list[str]]:
    """num poems of `lines` lines of `chars` characters starting with first; each poem a list of lines."""
    if first not in vocab or first in (PAD,) or vocab.index[first] in vocab.special_ids:
        raise PoemctlError(f"the start character '{first}' is not in this checkpoint's vocabulary")
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    special = torch.zeros(len(vocab), dtype=torch.bool)
    special[list(vocab.special_ids)] = True
    model.eval()
    device = next(model.parameters()).device
    ends = [line_end(vocab, k, lines, keep_commas) for k in range(lines)]
    # Training rows are padded in front: read as much padding as a poem of this length had.
    length = lines * chars + sum(e is not None for e in ends)
    prefix = [vocab.pad_id] * max(seq_len - length, 1) + [vocab.index[first]]
    tokens = torch.tensor([prefix] * num, device=device)
    out = model(tokens)
    state, logits = out.state, out.logits[:, -1]
    poems: list[list[str]] = [[] for _ in range(num)]
    for k in range(lines):
        line = [[first] if k == 0 else [] for _ in range(num)]
        for pos in range(1 if k == 0 else 0, chars):
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            picks = [course_pick(probs[b], special, gen) for b in range(num)]
            for b, p in enumerate(picks):
                line[b].append(vocab.tokens[p])
            if k == lines - 1 and pos == chars - 1:
                break  # the poem is complete: no need to read its last character
            feed = [picks]
            if pos == chars - 1 and ends[k] is not None:
                feed.append([vocab.index[ends[k]]] * num)
            out = model(torch.tensor(feed, device=device).t(), state=state)  # (num, 1 or 2) new tokens only
            state, logits = out.state, out.logits[:, -1]
        for b in range(num):
            poems[b].append("".join(line[b]))
    return poems


def format_poem(poem_lines: list[str]) -> str:
    """Lines with "，" after odd lines and "。" after even ones (and after the last)."""
    marks = ["，" if k % 2 == 0 and k < len(poem_lines) - 1 else "。" for k in range(len(poem_lines))]
    return "\n".join(line + mark for line, mark in zip(poem_lines, marks, strict=False))
