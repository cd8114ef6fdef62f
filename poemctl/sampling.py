"""Writing poems: one character at a time, carrying (h, C) forward, with the form enforced while sampling.

Inside a line only normal characters can be drawn (punctuation and specials are masked); the line ends are
forced, so every poem has exactly `lines` lines of `chars` characters whatever the checkpoint. Optional
constraints narrow the allowed characters further: an acrostic, 平水韵 rhyme at the line ends, and the
regular 平仄 patterns. All the poems of one call are written together, as one batch.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator

import torch

from poemctl import control
from poemctl.config import DataConfig, SampleConfig
from poemctl.data import Vocab, is_normal
from poemctl.errors import PoemctlError
from poemctl.models.base import PoemModel
from poemctl.prosody import FREE, PING, ZE, Prosody, patterns, rhymes_first_line

MIN_GROUP = 8  # a rhyme group needs this many characters in the vocabulary to be chosen


class Constraints:
    """Per-vocabulary masks: normal characters, tone classes and 平声 rhyme groups."""

    def __init__(self, vocab: Vocab, prosody: Prosody | None):
        V = len(vocab)
        self.normal = torch.tensor([is_normal(t) for t in vocab.tokens])
        self.ping_ok = self.normal.clone()
        self.ze_ok = self.normal.clone()
        self.groups: list[str] = []
        self.member = torch.zeros(0, V, dtype=torch.bool)  # (G, V)
        if prosody is None:
            return
        members: dict[str, list[int]] = {}
        for i, t in enumerate(vocab.tokens):
            if not self.normal[i]:
                continue
            tones = prosody.tones(t)
            self.ping_ok[i] = not tones or PING in tones
            self.ze_ok[i] = not tones or ZE in tones
            for g in prosody.ping_groups(t):
                members.setdefault(g, []).append(i)
        self.groups = sorted(g for g, ids in members.items() if len(ids) >= MIN_GROUP)
        self.member = torch.zeros(len(self.groups), V, dtype=torch.bool)
        for gi, g in enumerate(self.groups):
            self.member[gi, members[g]] = True

    def tone_mask(self, tone: str) -> torch.Tensor:
        """(V,) characters allowed where the pattern asks for tone."""
        return {PING: self.ping_ok, ZE: self.ze_ok, FREE: self.normal}[tone]


def choose(logits: torch.Tensor, allowed: torch.Tensor, cfg: SampleConfig, gen: torch.Generator) -> torch.Tensor:
    """(N, V) logits and allowed masks → (N,) picks; rows with nothing allowed take their likeliest.

    Works on log-probabilities in float64 over the allowed set, so that a low temperature approaches greedy
    (probabilities that underflow to 0 outside the likeliest character would otherwise leave nothing).
    """
    N = logits.shape[0]
    rows = torch.arange(N)
    scores = torch.log_softmax(logits.double() / cfg.temperature, dim=1)  # (N, V), −inf only far out
    allowed = allowed & ~scores.isnan()
    allowed[~allowed.any(1)] = True  # nothing allowed: every character is, the likeliest wins below
    masked = scores.masked_fill(~allowed, -math.inf)
    if cfg.strategy == "greedy":
        return masked.argmax(1)
    if cfg.strategy == "sample":
        # Renormalised over the allowed set; where every allowed one underflows, the likeliest allowed.
        probs = torch.softmax(masked - masked.amax(1, keepdim=True), dim=1)
        if cfg.top_k:
            kth = probs.topk(min(cfg.top_k, probs.shape[1]), dim=1).values[:, -1:]
            probs = probs * (probs >= kth)
        if cfg.top_p < 1:
            sorted_p, order = probs.sort(dim=1, descending=True)
            before = (sorted_p.cumsum(1) - sorted_p) / sorted_p.sum(1, keepdim=True)  # mass of likelier ones
            probs = torch.zeros_like(probs).scatter(1, order, sorted_p * (before < cfg.top_p))
        return torch.multinomial(probs, 1, generator=gen)[:, 0]
    # The course rule: draw from the top 5; while the draw is not allowed, draw again from the top 10.
    top = scores.topk(min(10, scores.shape[1]), dim=1).indices  # (N, 10)
    ok = allowed.gather(1, top)
    choice = torch.randint(min(5, top.shape[1]), (N,), generator=gen)
    for _ in range(50):
        bad = ~ok[rows, choice]
        if not bad.any():
            break
        choice = torch.where(bad, torch.randint(top.shape[1], (N,), generator=gen), choice)
    picks = top[rows, choice]
    # Rows with no allowed character in their top 10 widen the window: the top 5 of the allowed ones.
    stuck = ~ok[rows, choice]
    if stuck.any():
        n_allowed = allowed[stuck].sum(1)
        wide = masked[stuck].topk(5, dim=1).indices
        pick = torch.randint(5, (int(stuck.sum()),), generator=gen)
        pick = torch.where(pick < n_allowed, pick, torch.zeros_like(pick))  # fewer than 5 allowed: the first
        picks[stuck] = wide[torch.arange(len(pick)), pick]
    return picks


def line_end(vocab: Vocab, index: int, lines: int, keep_commas: bool) -> str | None:
    """The punctuation the model reads after line index (0-based), as in its training text."""
    mark = "。" if index % 2 == 1 or index == lines - 1 else ("，" if keep_commas else None)
    return mark if mark in vocab else None


def _check_start(vocab: Vocab, ch: str, what: str) -> int:
    if ch not in vocab or vocab.index[ch] in vocab.special_ids:
        raise PoemctlError(f"the {what} '{ch}' is not in this checkpoint's vocabulary")
    return vocab.index[ch]


POEM_BATCH = 512  # poems written at once: memory (a few N × V tensors) stays bounded for any --num


def write_poems(
    model: PoemModel,
    vocab: Vocab,
    first: str,
    cfg: SampleConfig,
    *,
    data: DataConfig | None = None,
    prosody: Prosody | None = None,
) -> list[list[str]]:
    """cfg.num poems starting with first (or the acrostic's characters); each poem a list of lines."""
    return [poem for batch in iter_poems(model, vocab, first, cfg, data=data, prosody=prosody) for poem in batch]


def iter_poems(
    model: PoemModel,
    vocab: Vocab,
    first: str,
    cfg: SampleConfig,
    *,
    data: DataConfig | None = None,
    prosody: Prosody | None = None,
) -> Iterator[list[list[str]]]:
    """write_poems' poems in batches of at most POEM_BATCH, one random stream for them all."""
    seed = cfg.seed if cfg.seed is not None else random.randrange(2**63)
    gen = torch.Generator().manual_seed(seed)
    for done in range(0, cfg.num, POEM_BATCH):
        batch = dataclasses.replace(cfg, num=min(POEM_BATCH, cfg.num - done))
        yield _write_batch(model, vocab, first, batch, data, prosody, gen)


@torch.no_grad()
def _write_batch(
    model: PoemModel,
    vocab: Vocab,
    first: str,
    cfg: SampleConfig,
    data: DataConfig | None,
    prosody: Prosody | None,
    gen: torch.Generator,
) -> list[list[str]]:
    """cfg.num poems that begin with first (one character or more, across lines; or the acrostic's
    characters at the head of each line); each poem a list of lines.

    data is the preset the model was trained on (default: the course's): its row length, its line ends,
    and its control tokens. With control tokens each poem starts with its form's token; the model then draws
    its rhyme group's and tone pattern's tokens from its own distribution over them. With rhyme marks the
    drawn group's token is written again before the last character of each even line, as in training.
    """
    data = data or DataConfig()
    lines = len(cfg.acrostic) if cfg.acrostic else cfg.lines
    # The characters the poem must have: the acrostic's at the head of each line, else the prompt's from
    # the first position on, across line ends (its punctuation ignored). (line, position) → id.
    if cfg.acrostic:
        forced = {(k, 0): _check_start(vocab, ch, "acrostic character") for k, ch in enumerate(cfg.acrostic)}
    else:
        prompt = [ch for ch in first if not control.LINE_BREAKS.match(ch) and not ch.isspace()]
        if not prompt:
            raise PoemctlError("give the poem's first character, or a beginning of it")
        if len(prompt) > lines * cfg.chars:
            raise PoemctlError(f"the beginning '{first}' is longer than a poem of {lines}×{cfg.chars} characters")
        forced = {divmod(i, cfg.chars): _check_start(vocab, ch, "start character") for i, ch in enumerate(prompt)}
    rhyme = cfg.rhyme or (bool(cfg.rhyme_group) and not data.control_tokens)  # the group must come from somewhere
    if (rhyme or cfg.tones) and prosody is None:
        prosody = Prosody()
    masks = Constraints(vocab, prosody if (rhyme or cfg.tones) else None)
    group = control.group_named(cfg.rhyme_group) if cfg.rhyme_group else None
    N, V = cfg.num, len(vocab)
    shapes = list(patterns(cfg.chars, lines).items())
    chosen = [shapes[i] for i in torch.randint(len(shapes), (N,), generator=gen).tolist()]
    rhyme_lines = [[k % 2 == 1 or (k == 0 and rhymes_first_line(name)) for k in range(lines)] for name, _ in chosen]
    if rhyme and not masks.groups:
        raise PoemctlError("--rhyme: this vocabulary has no 平水韵 rhyme group with enough characters")
    row_groups = torch.ones(N, len(masks.groups), dtype=torch.bool)  # groups each row may still rhyme in
    if group is not None and rhyme:
        if group not in masks.groups:
            raise PoemctlError(f"--rhyme-group {cfg.rhyme_group}: this vocabulary has too few characters of {group}")
        row_groups[:] = torch.tensor([g == group for g in masks.groups])
    used = torch.zeros(N, V, dtype=torch.bool)  # a rhyme character is not used twice

    model.eval()
    device = next(model.parameters()).device
    ends = [line_end(vocab, k, lines, data.keep_commas) for k in range(lines)]
    # Training rows are padded in front: read as much padding as a poem of this length had.
    length = lines * cfg.chars + sum(e is not None for e in ends) + (len(control.ORDER) if data.control_tokens else 0)
    length += lines // 2 if data.rhyme_marks else 0
    prefix = torch.full((N, max(data.seq_len - length, 1)), vocab.pad_id, device=device)
    marks = None  # with rhyme marks: the group token each row writes before its rhymes (−1: none)
    if data.control_tokens:  # the form's token (none's for a form the vocabulary lacks)
        form = control.token("form", control.form_of(["x" * cfg.chars] * lines))
        form = form if form in vocab else control.token("form", control.NONE)
        if form not in vocab:
            raise PoemctlError("this checkpoint's vocabulary lacks the form tokens its preset writes")
        prefix = torch.cat([prefix, torch.full((N, 1), vocab.index[form], device=device)], 1)
    out = model(prefix)
    state, logits = out.state, out.logits[:, -1]
    if data.control_tokens:
        drawn = {}
        for kind in control.ORDER[1:]:
            if kind == "rhyme" and group is not None:  # chosen by --rhyme-group, not drawn
                if control.token("rhyme", group) not in vocab:
                    raise PoemctlError(f"--rhyme-group {cfg.rhyme_group}: this checkpoint never saw {group}")
                drawn[kind] = torch.full((N,), vocab.index[control.token("rhyme", group)])
            else:
                drawn[kind] = _draw_token(logits, vocab, kind, gen)
            out = model(drawn[kind][:, None].to(device), state=state)
            state, logits = out.state, out.logits[:, -1]
        if data.rhyme_marks:
            none = vocab.index.get(control.token("rhyme", control.NONE), -1)
            marks = torch.where(drawn["rhyme"] == none, -1, drawn["rhyme"])
        if rhyme:  # --rhyme keeps to the group the model drew, where it drew one
            for b, p in enumerate(drawn["rhyme"].tolist()):
                group = control.name_of(vocab.tokens[p])[1]
                if group in masks.groups:
                    row_groups[b] = torch.tensor([g == group for g in masks.groups])
    poems = [["" for _ in range(lines)] for _ in range(N)]
    for k in range(lines):
        for pos in range(cfg.chars):
            rhyming = torch.tensor([r[k] for r in rhyme_lines]) & (pos == cfg.chars - 1) & rhyme
            if (k, pos) in forced:
                picks = torch.full((N,), forced[k, pos])
            else:
                allowed = masks.normal.expand(N, V).clone()
                if cfg.tones:
                    allowed &= torch.stack([masks.tone_mask(p[k][pos]) for _, p in chosen])
                if rhyming.any():
                    fits = (row_groups.float() @ masks.member.float() > 0) & masks.ping_ok & ~used
                    narrowed = allowed & fits
                    # Never break the form: a row left with no rhyming character keeps its other masks.
                    usable = rhyming & narrowed.any(1)
                    allowed[usable] = narrowed[usable]
                picks = choose(logits.cpu(), allowed, cfg, gen)
            if rhyming.any():  # a given rhyme narrows the group as a chosen one does
                r = rhyming.nonzero()[:, 0]
                narrowed = row_groups[r] & masks.member[:, picks[r]].t()
                row_groups[r] = torch.where(narrowed.any(1, keepdim=True), narrowed, row_groups[r])
                used[r, picks[r]] = True
            for b, p in enumerate(picks.tolist()):
                poems[b][k] += vocab.tokens[p]
            if k == lines - 1 and pos == cfg.chars - 1:
                break  # the poem is complete: no need to read its last character
            feed = [picks.to(device)]
            if pos == cfg.chars - 1 and ends[k] is not None:
                feed.append(torch.full((N,), vocab.index[ends[k]], device=device))
            out = model(torch.stack(feed, 1), state=state)  # (N, 1 or 2): the new characters only
            state, logits = out.state, out.logits[:, -1]
            if marks is not None and k % 2 == 1 and pos == cfg.chars - 2 and (marks >= 0).any():
                rows = (marks >= 0).nonzero()[:, 0]  # rows that rhyme: their group's token before the rhyme
                out = model(marks[rows, None].to(device), state=(state[0][rows], state[1][rows]))
                state = (state[0].index_copy(0, rows, out.state[0]), state[1].index_copy(0, rows, out.state[1]))
                logits = logits.index_copy(0, rows.to(logits.device), out.logits[:, -1])
    return poems


def _draw_token(logits: torch.Tensor, vocab: Vocab, kind: str, gen: torch.Generator) -> torch.Tensor:
    """(N, V) logits → (N,) control tokens of a kind, drawn from the model's distribution over that kind."""
    ids = torch.tensor([vocab.index[c] for c in control.tokens(kind) if c in vocab])
    probs = torch.softmax(logits.float().cpu()[:, ids], -1)
    return ids[torch.multinomial(probs, 1, generator=gen)[:, 0]]


def format_poem(poem_lines: list[str]) -> str:
    """Lines with "，" after odd lines and "。" after even ones (and after the last)."""
    marks = ["，" if k % 2 == 0 and k < len(poem_lines) - 1 else "。" for k in range(len(poem_lines))]
    return "\n".join(line + mark for line, mark in zip(poem_lines, marks, strict=True))
