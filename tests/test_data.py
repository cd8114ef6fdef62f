from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poemctl.config import DataConfig
from poemctl.data import PAD, UNK, Preprocessor, Vocab, build_vocab, encode_rows, load_corpus, split_indices
from poemctl.errors import PoemctlError


def test_course_preset_text():
    pre = Preprocessor(DataConfig())
    assert pre("秦川雄帝宅，函谷壯皇居。") == "秦川雄帝宅函谷壮皇居。"
    assert pre("何處？《詩》 在， 此。") == "何处？《诗》在此。"


def test_options_keep_commas_and_traditional():
    assert Preprocessor(DataConfig(keep_commas=True))("秦川，壯。") == "秦川，壮。"
    assert Preprocessor(DataConfig(traditional=True))("秦川，壯。") == "秦川壯。"


def test_vocab_min_freq_and_order():
    vocab = build_vocab(["月月月山山水", "月山江"], min_freq=2)
    assert vocab.tokens == (PAD, UNK, "月", "山")
    assert vocab.encode("月江") == [2, vocab.unk_id]
    assert vocab.pad_id == 0


def test_special_ids_cover_punctuation_and_specials():
    vocab = Vocab((PAD, UNK, "月", "。", "？", "《", "□"))
    assert vocab.special_ids == {0, 1, 3, 4, 5, 6}


def test_rows_are_front_padded_and_cut():
    vocab = Vocab((PAD, UNK, "a", "b"))
    rows = encode_rows(["ab", "abababab"], vocab, seq_len=5)
    assert rows.tolist() == [[0, 0, 0, 2, 3], [2, 3, 2, 3, 2]]


@settings(deadline=None)  # no timing in tests: a busy CI machine must not fail them
@given(st.lists(st.text(alphabet="月山水江。", min_size=1, max_size=30), min_size=1, max_size=20), st.integers(2, 40))
def test_rows_property(poems, seq_len):
    vocab = Vocab((PAD, UNK, "月", "山", "水", "江", "。"))
    rows = encode_rows(poems, vocab, seq_len)
    assert rows.shape == (len(poems), seq_len)
    for poem, row in zip(poems, rows, strict=True):
        kept = poem[:seq_len]
        assert vocab.decode(row[seq_len - len(kept) :]) == kept  # the poem's start, at the end of the row
        assert (row[: seq_len - len(kept)] == vocab.pad_id).all()  # padding only in front


@settings(deadline=None)
@given(st.integers(1, 500), st.integers(0, 5))
def test_split_is_4_to_1_disjoint_and_seeded(n, seed):
    train, test = split_indices(n, 0.2, seed)
    assert len(test) == round(n * 0.2)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(n))
    again = split_indices(n, 0.2, seed)
    assert (again[0] == train).all() and (again[1] == test).all()


def test_load_corpus_shapes_and_cache(data_cfg, monkeypatch):
    first = load_corpus(data_cfg)
    assert first.train.shape[1] == 80 and first.train.shape[0] + first.test.shape[0] == 400
    assert first.test.shape[0] == 80
    assert "，" not in first.vocab.tokens and "。" in first.vocab.tokens
    assert len(list(Path(data_cfg.cache_dir).glob("*.safetensors"))) == 1

    def no_preprocessing(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr("poemctl.data.prepare_poems", no_preprocessing)
    second = load_corpus(data_cfg)
    assert second.vocab == first.vocab and (second.train == first.train).all()


def test_cache_key_changes_with_options(data_cfg):
    from dataclasses import replace

    a = load_corpus(data_cfg)
    b = load_corpus(replace(data_cfg, keep_commas=True))
    assert "，" in b.vocab.tokens and "，" not in a.vocab.tokens


def test_cache_key_changes_with_the_encoding_code(data_cfg, monkeypatch):
    import poemctl.data

    before = poemctl.data.cache_path(data_cfg, "abc", None)
    monkeypatch.setattr(poemctl.data, "CACHE_VERSION", poemctl.data.CACHE_VERSION + 1)
    assert poemctl.data.cache_path(data_cfg, "abc", None) != before  # old rows are never read as new ones


def test_empty_after_filtering(data_cfg, tmp_path):
    from dataclasses import replace

    folder = tmp_path / "empty" / "全唐诗"
    folder.mkdir(parents=True)
    (folder / "poet.tang.0.json").write_text('[{"paragraphs": ["，"]}, {"paragraphs": []}]')
    with pytest.raises(PoemctlError, match="no poem"):
        load_corpus(replace(data_cfg, corpus=str(tmp_path / "empty")))


@pytest.mark.parametrize("damage", ["random", "truncated", "one-row", "vocab"])
def test_a_damaged_corpus_cache_is_rebuilt_with_a_warning(data_cfg, damage):
    from safetensors.torch import load_file, save_file

    from poemctl.data import _metadata

    first = load_corpus(data_cfg)
    train = first.train.clone()  # a cached corpus may be a view of the file, which is about to change
    (path,) = Path(data_cfg.cache_dir).glob("*.safetensors")
    data = path.read_bytes()
    if damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # well-formed files whose content is not what was written
        tensors, meta = load_file(path), _metadata(path)
        if damage == "one-row":
            tensors["train"][3, -1] = 10**6  # an id past the vocabulary
        else:
            meta["vocab"] = meta["vocab"].replace("月", "日", 1)
        save_file(tensors, path, metadata=meta)
    with pytest.warns(UserWarning, match="the cached corpus .* is damaged: rebuilding it"):
        again = load_corpus(data_cfg)
    assert again.vocab == first.vocab and torch.equal(again.train, train)
    assert torch.equal(load_corpus(data_cfg).train, train)  # rebuilt for good
