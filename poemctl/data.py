"""Preprocessing (the course preset by default), the vocabulary, and the encoded-corpus cache."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset

from poemctl import control, progress
from poemctl.config import DataConfig
from poemctl.corpus import corpus_files, corpus_hash, read_poems
from poemctl.errors import PoemctlError
from poemctl.files import atomic_write

PAD = " "  # padding is a space, put IN FRONT of short poems (the course preset)
UNK = "<unk>"


@dataclass(frozen=True)
class Vocab:
    """Index ↔ character; built by fastNLP's Vocabulary, stored as its ordered token list."""

    tokens: tuple[str, ...]

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Character → id."""
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def pad_id(self) -> int:
        """Id of the padding character."""
        return self.index[PAD]

    @property
    def unk_id(self) -> int:
        """Id of the unknown-character token."""
        return self.index[UNK]

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, ch: str) -> bool:
        return ch in self.index

    def encode(self, text: str) -> list[int]:
        """Ids of text's characters (unknown ones → <unk>)."""
        unk = self.unk_id
        return [self.index.get(ch, unk) for ch in text]

    def decode(self, ids) -> str:
        """Characters of ids."""
        return "".join(self.tokens[i] for i in ids)

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids that are not a normal character: padding, unknown, punctuation and symbols."""
        return frozenset(i for i, t in enumerate(self.tokens) if not is_normal(t))


def vocab_from_json(text: str) -> Vocab:
    """A vocabulary as checkpoints and caches store it (a JSON list); ValueError naming what is wrong."""
    tokens = json.loads(text)
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise ValueError("vocab: not a list of characters")
    if len(set(tokens)) != len(tokens):
        raise ValueError("vocab: a character appears twice")
    for token, what in ((PAD, "padding"), (UNK, "unknown-character")):
        if token not in tokens:
            raise ValueError(f"vocab: no {what} token {token!r}")
    return Vocab(tuple(tokens))


def is_normal(token: str) -> bool:
    """True for a written character (a letter such as 月), false for punctuation, symbols and specials."""
    return len(token) == 1 and unicodedata.category(token) == "Lo"


def build_vocab(poems: list[str], min_freq: int) -> Vocab:
    """Characters seen at least min_freq times, most frequent first, after PAD and UNK."""
    with warnings.catch_warnings():  # fastNLP 0.7 imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        from fastNLP import Vocabulary  # slow to import: only when a vocabulary is built

    vocab = Vocabulary(min_freq=min_freq, padding=PAD, unknown=UNK)
    for poem in poems:
        vocab.add_word_lst(list(poem))
    vocab.build_vocab()
    return Vocab(tuple(vocab.idx2word[i] for i in range(len(vocab))))


class Preprocessor:
    """Turns a raw poem into training text by the preset's rules."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self._t2s = None
        if not cfg.traditional:
            import opencc

            self._t2s = opencc.OpenCC("t2s")
        self._prosody = None
        if cfg.control_tokens:
            from poemctl.prosody import Prosody

            self._prosody = Prosody()

    def __call__(self, text: str) -> str:
        """Simplified script, no whitespace (a space is the padding), no "，" unless asked to keep it; with
        control tokens, the poem's form, rhyme group and tone pattern in front (read before "，" goes), and
        with rhyme marks the group's token again before each even line's last character."""
        if self._t2s is not None:
            text = self._t2s.convert(text)
        text = "".join(text.split())
        head = control.prefix(text, self._prosody) if self._prosody is not None else ""
        if self.cfg.rhyme_marks:
            text = control.with_rhyme_marks(text, control.name_of(head[1])[1])
        if not self.cfg.keep_commas:
            text = text.replace("，", "")
        return head + text


def encode_rows(poems: list[str], vocab: Vocab, seq_len: int) -> np.ndarray:
    """(N, seq_len) int32 rows: each poem cut to its first seq_len characters, padded in front."""
    rows = np.full((len(poems), seq_len), vocab.pad_id, dtype=np.int32)
    for r, poem in enumerate(poems):
        ids = vocab.encode(poem[:seq_len])
        rows[r, seq_len - len(ids) :] = ids
    return rows


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation of range(n) cut into (train, test)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


@dataclass(frozen=True)
class Corpus:
    """The encoded corpus: (N, seq_len) int32 rows for each split, and its vocabulary."""

    vocab: Vocab
    train: torch.Tensor
    test: torch.Tensor
    corpus_hash: str


def prepare_poems(cfg: DataConfig, raw: list[str], source: str) -> list[str]:
    """The preprocessed poems of raw that keep at least 2 characters; none left is an error."""
    pre = Preprocessor(cfg)
    poems = []
    with progress.bar(f"preprocessing {len(raw):,} poems", len(raw)) as advance:
        for start in range(0, len(raw), 1000):
            poems += [p for p in map(pre, raw[start : start + 1000]) if len(p) >= 2]
            advance(min(1000, len(raw) - start))
    if not poems:
        raise PoemctlError(f"{source} holds no poem of 2 or more characters after preprocessing")
    return poems


CACHE_VERSION = 2  # raise it whenever preprocessing or encoding changes what a preset's rows hold


def cache_path(cfg: DataConfig, digest: str, vocab: Vocab | None) -> Path:
    """Where the encoded corpus is cached: keyed by the corpus hash, the preset, a given vocabulary and the
    version of the code that encodes it."""
    key = json.dumps([CACHE_VERSION, digest, cfg.preset(), vocab.tokens if vocab else None], ensure_ascii=False)
    return Path(cfg.cache_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors"


def _split(cfg: DataConfig, poems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the training and test poems: the seeded 4:1 split, then the form filter."""
    train_idx, test_idx = split_indices(len(poems), cfg.test_fraction, cfg.split_seed)
    if cfg.forms:  # after the split: a subset's test poems are test poems of the whole corpus too
        kept = np.array([control.poem_form(p) in cfg.forms for p in poems])
        train_idx, test_idx = train_idx[kept[train_idx]], test_idx[kept[test_idx]]
        if not len(train_idx) or not len(test_idx):
            raise PoemctlError(f"the corpus at {cfg.corpus} holds too few poems of the forms {', '.join(cfg.forms)}")
    return train_idx, test_idx


def split_poems(cfg: DataConfig) -> tuple[list[str], list[str]]:
    """The preprocessed training and test poems as text, whole (not cut to rows), as load_corpus splits them."""
    poems = _corpus_poems(cfg, corpus_files(cfg.corpus))
    train_idx, test_idx = _split(cfg, poems)
    return [poems[i] for i in train_idx], [poems[i] for i in test_idx]


def _corpus_poems(cfg: DataConfig, files: list[Path]) -> list[str]:
    """The preprocessed poems of the corpus files, the first cfg.max_poems of them if that is set."""
    return prepare_poems(cfg, read_poems(files, cfg.max_poems), f"the corpus at {cfg.corpus}")


def load_corpus(cfg: DataConfig, vocab: Vocab | None = None) -> Corpus:
    """The encoded corpus by cfg, from the cache when it is there; vocab forces a vocabulary (scoring)."""
    files = corpus_files(cfg.corpus)
    digest = corpus_hash(files)
    path = cache_path(cfg, digest, vocab)
    if path.is_file():
        cached = _read_cache(path, digest)
        if cached is not None:
            return cached
        warnings.warn(f"the cached corpus {path} is damaged: rebuilding it", stacklevel=2)
    poems = _corpus_poems(cfg, files)
    vocab = vocab or build_vocab(poems, cfg.min_freq)
    train_idx, test_idx = _split(cfg, poems)
    # Each split encoded straight into its own rows: the whole corpus is never held as rows besides them.
    train, test = (
        torch.from_numpy(encode_rows([poems[i] for i in idx], vocab, cfg.seq_len)) for idx in (train_idx, test_idx)
    )
    corpus = Corpus(vocab, train, test, digest)
    vocab_json = json.dumps(list(vocab.tokens), ensure_ascii=False)
    metadata = {"vocab": vocab_json, "sha256": _digest(vocab_json, corpus)}
    tensors = {"train": corpus.train, "test": corpus.test}
    with contextlib.suppress(PoemctlError):  # an unwritable cache only costs time
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return corpus


def _digest(vocab_json: str, corpus: Corpus) -> str:
    """What the cache records of itself: a hash of its vocabulary and rows, checked on every read."""
    h = hashlib.sha256(vocab_json.encode())
    for rows in (corpus.train, corpus.test):
        h.update(rows.numpy().tobytes())
    return h.hexdigest()


def _read_cache(path: Path, corpus_digest: str) -> Corpus | None:
    """The cached corpus at path, or None if anything in it is not what load_corpus wrote."""
    try:
        tensors, meta = load_file(path), _metadata(path)
        corpus = Corpus(vocab_from_json(meta["vocab"]), tensors["train"], tensors["test"], corpus_digest)
        if meta.get("sha256") != _digest(meta["vocab"], corpus):
            return None
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return None
    return corpus


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def batches(rows: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """Batches of (N, L) rows; each batch is a 1-tuple of (B, L) rows."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(rows), batch_size=batch_size, shuffle=shuffle, generator=g)


def split_batch(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) rows → inputs rows[:, :-1] and targets rows[:, 1:] (characters 1..L-1 and 2..L)."""
    rows = rows.long()
    return rows[:, :-1], rows[:, 1:]
