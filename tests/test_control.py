"""control.py and the poem preset: control tokens, the form filter, sampling with them, a second stage."""

import json

import pytest
import torch
from typer.testing import CliRunner

from poemctl import checkpoint, control
from poemctl.cli import app
from poemctl.config import DataConfig, SampleConfig
from poemctl.data import is_normal, load_corpus
from poemctl.errors import PoemctlError
from poemctl.prosody import Prosody
from poemctl.sampling import write_poems
from tests.conftest import CORPUS, TINY_ARGS

runner = CliRunner()
MAPLE_BRIDGE = "月落乌啼霜满天，江枫渔火对愁眠。姑苏城外寒山寺，夜半钟声到客船。"


@pytest.fixture(scope="module")
def prosody():
    return Prosody()


def test_a_quatrains_form_rhyme_and_tones(prosody):
    names = [control.name_of(ch) for ch in control.prefix(MAPLE_BRIDGE, prosody)]
    assert names[0] == ("form", "七绝") and names[1] == ("rhyme", "下平聲一先")
    assert names[2][0] == "tones" and names[2][1] in control.PATTERNS[:4]


def test_an_irregular_poem_gets_none_everywhere(prosody):
    names = [control.name_of(ch)[1] for ch in control.prefix("天地玄黄，宇宙洪荒日月盈昃。", prosody)]
    assert names == [control.NONE] * 3
    assert control.prefix("", prosody) == "".join(control.token(k, control.NONE) for k in control.ORDER)


def test_tokens_are_distinct_specials_that_read_back():
    seen = set()
    for kind, (_, names) in control.KINDS.items():
        for name in names:
            ch = control.token(kind, name)
            assert control.name_of(ch) == (kind, name) and not is_normal(ch) and ch not in seen
            seen.add(ch)
    assert control.name_of("月") is None and len(control.GROUPS) == 31


def test_poem_preset_rows_start_with_the_three_tokens(tmp_path):
    cfg = DataConfig(corpus=str(CORPUS), cache_dir=str(tmp_path), keep_commas=True, control_tokens=True)
    corpus = load_corpus(cfg)
    pad = corpus.vocab.pad_id
    for row in corpus.train[:50]:
        text = corpus.vocab.decode(row[row != pad].tolist())
        assert [control.name_of(ch)[0] for ch in text[:3]] == list(control.ORDER), text
        assert "，" in text[3:]


def test_the_form_filter_keeps_a_subset_of_each_side_of_the_split(tmp_path):
    base = DataConfig(corpus=str(CORPUS), cache_dir=str(tmp_path), keep_commas=True, control_tokens=True)
    whole = load_corpus(base)
    quatrains = load_corpus(DataConfig(**{**base.__dict__, "forms": ("七绝",)}), vocab=whole.vocab)
    pad = whole.vocab.pad_id

    def texts(rows):
        return {whole.vocab.decode(r[r != pad].tolist()) for r in rows}

    assert 100 <= len(quatrains.train) + len(quatrains.test) < len(whole.train) + len(whole.test)
    assert texts(quatrains.train) <= texts(whole.train) and texts(quatrains.test) <= texts(whole.test)
    assert all(control.name_of(t[0]) == ("form", "七绝") for t in texts(quatrains.train))


def test_forms_need_line_breaks():
    with pytest.raises(PoemctlError, match="--forms needs --keep-commas or --control-tokens"):
        DataConfig(forms=("七绝",))
    with pytest.raises(PoemctlError, match="unknown form '七言'"):
        DataConfig(forms=("七言",), keep_commas=True)


@pytest.fixture(scope="module")
def poem_run(tmp_path_factory):
    """A tiny run on the poem preset (commas, control tokens)."""
    tmp = tmp_path_factory.mktemp("poem")
    args = ["train", *TINY_ARGS, "--keep-commas", "--control-tokens", "--max-steps", "6", "--corpus", str(CORPUS)]
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp / "cache"), "--out", str(tmp / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir


def test_sampling_a_control_token_model_writes_the_form(poem_run, prosody):
    model, meta = checkpoint.load(poem_run / "last.safetensors")
    assert meta.config.data.control_tokens
    for cfg in (SampleConfig(num=40, seed=1), SampleConfig(num=40, seed=1, rhyme=True), SampleConfig(chars=5, num=5)):
        poems = write_poems(model, meta.vocab, "月", cfg, data=meta.config.data)
        assert all(
            len(p) == 4 and all(len(line) == cfg.chars and all(map(is_normal, line)) for line in p) for p in poems
        )
    rhymed = write_poems(model, meta.vocab, "月", SampleConfig(num=40, seed=1, rhyme=True), data=meta.config.data)
    assert all(prosody.rhymed(p) for p in rhymed)


def test_the_model_draws_its_rhyme_token_from_its_own_distribution(poem_run, monkeypatch):
    model, meta = checkpoint.load(poem_run / "last.safetensors")
    fed = []
    real = type(model).forward

    def watched(self, tokens, *a, **k):
        fed.append(tokens[:, -1].clone())
        return real(self, tokens, *a, **k)

    monkeypatch.setattr(type(model), "forward", watched)
    write_poems(model, meta.vocab, "月", SampleConfig(num=64, seed=3), data=meta.config.data)
    kinds = [{control.name_of(meta.vocab.tokens[i]) for i in step.tolist()} for step in fed[:3]]
    assert {k for k, _ in kinds[0]} == {"form"} and len(kinds[0]) == 1  # forced: 七绝
    assert {k for k, _ in kinds[1]} == {"rhyme"} and len(kinds[1]) > 1  # drawn: several groups among 64 rows
    assert {k for k, _ in kinds[2]} == {"tones"}


def test_a_second_stage_starts_from_a_checkpoint(poem_run, tmp_path):
    ckpt = poem_run / "last.safetensors"
    args = ["train", *TINY_ARGS, "--keep-commas", "--control-tokens", "--forms", "七绝,五绝", "--seq-len", "36"]
    args += ["--max-steps", "2", "--corpus", str(CORPUS), "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, [*args, "--init-from", str(ckpt), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    second, meta = checkpoint.load(run_dir / "last.safetensors")
    first, first_meta = checkpoint.load(ckpt)
    assert meta.vocab == first_meta.vocab and meta.config.data.forms == ("七绝", "五绝")
    assert json.loads((run_dir / "config.json").read_text())["train"]["init_from"] == str(ckpt)
    moved = (second.output.weight - first.output.weight).abs().max()
    assert 0 < moved < 1  # trained on from the first stage's weights, not from a fresh start
    bad = runner.invoke(app, [*args, "--init-from", str(ckpt), "--hidden", "32", "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "give --embedding 8 --hidden 16" in bad.output


def test_an_untrained_model_still_writes_valid_poems_with_tokens(poem_run):
    _, meta = checkpoint.load(poem_run / "last.safetensors")
    from poemctl.registry import MODELS

    torch.manual_seed(0)
    fresh = MODELS.get("numpy-lstm")(meta.config.model)
    poems = write_poems(fresh, meta.vocab, "山", SampleConfig(num=8, seed=0), data=meta.config.data)
    assert len(poems) == 8 and all(len(line) == 7 for p in poems for line in p)


def test_rhyme_marks_go_before_each_even_lines_last_character():
    mark = control.token("rhyme", "下平聲一先")
    marked = control.with_rhyme_marks(MAPLE_BRIDGE, "下平聲一先")
    assert marked == MAPLE_BRIDGE.replace("愁眠", f"愁{mark}眠").replace("客船", f"客{mark}船")
    assert control.with_rhyme_marks(MAPLE_BRIDGE, control.NONE) == MAPLE_BRIDGE
    assert control.with_rhyme_marks("床前明月光，疑是地上霜", "下平聲七陽").endswith(
        control.token("rhyme", "下平聲七陽") + "霜"
    )
    assert control.without_tokens(marked) == MAPLE_BRIDGE


def test_rhyme_marks_need_control_tokens():
    with pytest.raises(PoemctlError, match="--rhyme-marks needs --control-tokens"):
        DataConfig(rhyme_marks=True, keep_commas=True)


def test_a_marked_model_is_fed_its_group_before_each_rhyme(tmp_path, monkeypatch):
    args = ["train", *TINY_ARGS, "--keep-commas", "--control-tokens", "--rhyme-marks", "--max-steps", "3"]
    result = runner.invoke(
        app, [*args, "--corpus", str(CORPUS), "--cache-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    model, meta = checkpoint.load(run_dir / "last.safetensors")
    fed = []
    real = type(model).forward

    def watched(self, tokens, state=None, **k):
        fed.append((tokens.clone(), None if state is None else len(state[0])))
        return real(self, tokens, state, **k)

    monkeypatch.setattr(type(model), "forward", watched)
    poems = write_poems(model, meta.vocab, "月", SampleConfig(num=32, seed=5), data=meta.config.data)
    assert all(len(p) == 4 and all(len(x) == 7 for x in p) for p in poems)
    rhyme = {meta.vocab.index[c] for c in control.tokens("rhyme") if c in meta.vocab}
    drawn = fed[1][0][:, -1].tolist()  # the rhyme tokens the model drew, one a row (fed[0]: padding and form)
    marked = [(t, n) for t, n in fed[3:] if set(t[:, -1].tolist()) <= rhyme and t.shape[1] == 1]
    none = meta.vocab.index[control.token("rhyme", control.NONE)]
    rows = sum(d != none for d in drawn)
    assert len(marked) == (2 if rows else 0)  # lines 2 and 4
    for tokens, n in marked:  # only the rows that drew a group, each with its own group
        assert n == rows and tokens[:, 0].tolist() == [d for d in drawn if d != none]


def test_a_form_the_vocabulary_lacks_writes_with_the_none_form(poem_run):
    model, meta = checkpoint.load(poem_run / "last.safetensors")
    assert control.token("form", "五律") not in meta.vocab or control.token("form", control.NONE) in meta.vocab
    poems = write_poems(model, meta.vocab, "月", SampleConfig(lines=6, num=3, seed=0), data=meta.config.data)
    assert [len(p) for p in poems] == [6, 6, 6]  # six lines: no form token of its own, none's instead


def test_a_rhyme_group_is_told_to_a_model_with_control_tokens(poem_run, monkeypatch):
    model, meta = checkpoint.load(poem_run / "last.safetensors")
    group = next(g for g in control.GROUPS[:-1] if control.token("rhyme", g) in meta.vocab)
    fed = []
    real = type(model).forward

    def watched(self, tokens, state=None, **k):
        fed.append(tokens.clone())
        return real(self, tokens, state, **k)

    monkeypatch.setattr(type(model), "forward", watched)
    write_poems(model, meta.vocab, "月", SampleConfig(num=6, seed=0, rhyme_group=group), data=meta.config.data)
    assert fed[1][:, -1].tolist() == [meta.vocab.index[control.token("rhyme", group)]] * 6  # not drawn
