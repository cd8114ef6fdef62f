import json

import pytest
import torch
from typer.testing import CliRunner

from poemctl.cli import app
from poemctl.config import ModelConfig, SampleConfig
from poemctl.data import load_corpus
from poemctl.errors import PoemctlError
from poemctl.models.torch_lstm import TorchLSTM
from poemctl.poem_stats import valid_form
from poemctl.prosody import Prosody
from poemctl.sampling import choose, format_poem, write_poems

runner = CliRunner()


@pytest.fixture(scope="module")
def prosody():
    return Prosody()


@pytest.fixture
def untrained(data_cfg):
    """A random, untrained model over the real vocabulary of the corpus slice."""
    vocab = load_corpus(data_cfg).vocab
    torch.manual_seed(0)
    return TorchLSTM(ModelConfig(vocab_size=len(vocab), hidden=16, embedding=8)), vocab


def _logits(n=15):
    return torch.linspace(1, 0.1, n).expand(400, n).clone()


def test_course_rule_draws_from_the_top_five():
    allowed = torch.ones(400, 15, dtype=torch.bool)
    picks = choose(_logits(), allowed, SampleConfig(), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {0, 1, 2, 3, 4}


def test_course_rule_redraws_from_the_top_ten():
    allowed = torch.ones(400, 15, dtype=torch.bool)
    allowed[:, :5] = False  # the whole top 5 is punctuation
    picks = choose(_logits(), allowed, SampleConfig(), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {5, 6, 7, 8, 9}


def test_course_rule_widens_when_the_top_ten_is_masked():
    allowed = torch.ones(400, 15, dtype=torch.bool)
    allowed[:, :10] = False
    picks = choose(_logits(), allowed, SampleConfig(), torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {10, 11, 12, 13, 14}


@pytest.mark.parametrize(
    "cfg",
    [
        SampleConfig(strategy="greedy"),
        SampleConfig(strategy="sample", top_k=3),
        SampleConfig(strategy="sample", top_p=0.3, temperature=0.5),
    ],
)
def test_other_strategies_respect_the_mask(cfg):
    allowed = torch.ones(400, 15, dtype=torch.bool)
    allowed[:, 0] = False
    picks = choose(_logits(), allowed, cfg, torch.Generator().manual_seed(0))
    assert 0 not in picks.tolist()
    if cfg.strategy == "greedy":
        assert set(picks.tolist()) == {1}
    if cfg.top_k == 3:
        assert set(picks.tolist()) == {1, 2, 3}


@pytest.mark.parametrize("temperature", [0.01, 0.001, 1e-45])
def test_a_low_temperature_approaches_greedy_over_the_allowed_set(temperature):
    logits = torch.linspace(30, 0, 15).expand(400, 15).clone()
    allowed = torch.ones(400, 15, dtype=torch.bool)
    allowed[:, 0] = False  # the likeliest is masked: what is left underflows to 0 at this temperature
    cfg = SampleConfig(strategy="sample", temperature=temperature)
    picks = choose(logits, allowed, cfg, torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == {1}  # the likeliest allowed one, not a uniform draw of rare ones


def test_sampling_at_temperature_one_follows_the_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0]).log_softmax(0).expand(20000, 3).clone()
    picks = choose(logits, torch.ones(20000, 3, dtype=torch.bool), SampleConfig(strategy="sample"), torch.Generator())
    freq = torch.bincount(picks, minlength=3).double() / 20000
    torch.testing.assert_close(freq, torch.tensor([2.0, 1.0, 0.0]).softmax(0).double(), atol=0.015, rtol=0)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--temperature", "inf", "--temperature must be a positive number"),
        ("--temperature", "1e-400", "--temperature must be a positive number"),
        ("--seed", "-1", "--seed must be in [0, 2**63), got -1"),
        ("--seed", str(2**63), "--seed must be in [0, 2**63)"),
    ],
)
def test_extreme_sampling_values_are_one_line_errors(option, value, message):
    result = runner.invoke(app, ["sample", "月", "--strategy", "sample", option, value])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("strategy", ["course", "sample", "greedy"])
@pytest.mark.parametrize("chars", [5, 7])
def test_form_is_guaranteed_even_untrained(untrained, strategy, chars):
    model, vocab = untrained
    poems = write_poems(model, vocab, "月", SampleConfig(chars=chars, num=300, seed=1, strategy=strategy))
    assert len(poems) == 300
    assert all(valid_form(p, 4, chars) and p[0][0] == "月" for p in poems)


def test_incremental_decoding_never_rereads_the_prefix(untrained):
    model, vocab = untrained
    lengths = []
    real = model.forward

    def spy(tokens, *args, **kwargs):
        lengths.append(tokens.shape[1])
        return real(tokens, *args, **kwargs)

    model.forward = spy
    write_poems(model, vocab, "月", SampleConfig(num=3, seed=0))
    assert lengths[0] > 10 and max(lengths[1:]) <= 2 and len(lengths) == 28


def test_acrostic(untrained):
    model, vocab = untrained
    poems = write_poems(model, vocab, "x", SampleConfig(acrostic="春夏秋冬", chars=5, num=50, seed=3))
    assert all([line[0] for line in p] == list("春夏秋冬") for p in poems)
    assert all(valid_form(p, 4, 5) for p in poems)
    with pytest.raises(PoemctlError, match="acrostic character '龘'"):
        write_poems(model, vocab, "x", SampleConfig(acrostic="春龘", num=1))


def test_same_seed_same_poems(untrained):
    model, vocab = untrained
    for strategy in ("course", "sample"):
        a = write_poems(model, vocab, "山", SampleConfig(num=5, seed=7, strategy=strategy))
        b = write_poems(model, vocab, "山", SampleConfig(num=5, seed=7, strategy=strategy))
        c = write_poems(model, vocab, "山", SampleConfig(num=5, seed=8, strategy=strategy))
        assert a == b and a != c


def test_rhyme_and_tones_hold_even_untrained(untrained, prosody):
    model, vocab = untrained
    poems = write_poems(model, vocab, "月", SampleConfig(num=300, seed=2, rhyme=True, tones=True), prosody=prosody)
    assert all(valid_form(p, 4, 7) for p in poems)
    assert sum(prosody.rhymed(p) for p in poems) / 300 >= 0.95
    assert sum(prosody.tonal(p) for p in poems) / 300 >= 0.95
    free = write_poems(model, vocab, "月", SampleConfig(num=300, seed=2), prosody=prosody)
    assert sum(prosody.rhymed(p) for p in free) / 300 < 0.5  # the constraint is what makes them rhyme


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"chars": 6}, "--chars"),
        ({"lines": 0}, "--lines"),
        ({"num": 0}, "--num"),
        ({"strategy": "beam"}, "--strategy"),
        ({"strategy": "course", "top_k": 5}, "apply to --strategy sample, not course"),
        ({"strategy": "greedy", "temperature": 0.5}, "apply to --strategy sample, not greedy"),
        ({"strategy": "sample", "top_p": 0}, "--top-p"),
        ({"strategy": "sample", "temperature": 0}, "--temperature"),
    ],
)
def test_bad_sampling_options(kwargs, text):
    with pytest.raises(PoemctlError, match=text):
        SampleConfig(**kwargs)


def test_a_temperature_top_k_or_top_p_implies_sampling():
    assert SampleConfig().strategy == "course"
    for knob in ({"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.9}):
        assert SampleConfig(**knob).strategy == "sample"


def test_format_poem():
    assert format_poem(["一二三四五", "上山下水风", "甲乙丙丁戊", "子丑寅卯辰"]) == (
        "一二三四五，\n上山下水风。\n甲乙丙丁戊，\n子丑寅卯辰。"
    )


def test_sample_cli_acrostic_and_rhyme(trained):
    result = runner.invoke(
        app,
        [
            "sample",
            "--acrostic",
            "春夏秋冬",
            "--rhyme",
            "--tones",
            "--seed",
            "1",
            "--ckpt",
            str(trained / "best.safetensors"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line[0] for line in lines] == list("春夏秋冬") and all(len(line) == 8 for line in lines)


def test_evaluate_cli(trained):
    args = ["evaluate", "--num", "40", "--rhyme", "--ckpt", str(trained / "best.safetensors")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["poems"] == 40 and stats["form_valid"] == 1.0 and stats["rhymed"] >= 0.95
    assert 0 <= stats["copy_rate"] <= 1 and 0 < stats["distinct_1"] <= 1 and stats["ms_per_poem"] > 0
    table = runner.invoke(app, args).output
    for key in ("form_valid", "rhymed", "tonal", "copy_rate", "distinct_1", "distinct_2", "ms_per_poem"):
        assert key in table


def test_many_poems_are_written_in_batches_of_bounded_size(untrained, monkeypatch):
    import poemctl.sampling as sampling

    model, vocab = untrained
    monkeypatch.setattr(sampling, "POEM_BATCH", 4)
    rows = []
    real = type(model).forward

    def watched(self, tokens, state=None, **k):
        rows.append(tokens.shape[0])
        return real(self, tokens, state, **k)

    monkeypatch.setattr(type(model), "forward", watched)
    poems = write_poems(model, vocab, "月", SampleConfig(num=11, seed=3))
    assert len(poems) == 11 and all(valid_form(p, 4, 7) for p in poems)
    assert max(rows) == 4 and 3 in rows  # 4 + 4 + 3
    assert write_poems(model, vocab, "月", SampleConfig(num=11, seed=3)) == poems


def test_a_beginning_longer_than_one_character_is_kept_across_lines(untrained):
    model, vocab = untrained
    beginning = "春风得意马上疾，一日"  # (蹄 is not in the slice's vocabulary)
    for poem in write_poems(model, vocab, beginning, SampleConfig(num=5, seed=1)):
        assert poem[0] == "春风得意马上疾" and poem[1].startswith("一日") and valid_form(poem, 4, 7)
    with pytest.raises(PoemctlError, match="longer than a poem of 4×5 characters"):
        write_poems(model, vocab, "春" * 21, SampleConfig(chars=5))
    with pytest.raises(PoemctlError, match="give the poem's first character"):
        write_poems(model, vocab, "，", SampleConfig())


def test_a_rhyme_group_holds_a_model_without_control_tokens_to_it(untrained, prosody):
    model, vocab = untrained
    for poem in write_poems(model, vocab, "月", SampleConfig(num=20, seed=4, rhyme_group="东"), prosody=prosody):
        assert all("上平聲一東" in prosody.ping_groups(line[-1]) for line in poem[1::2]), poem


@pytest.mark.parametrize("name", ["东", "東", "上平聲一東"])
def test_rhyme_groups_are_named_in_either_script_or_in_full(name):
    from poemctl.control import group_named

    assert group_named(name) == "上平聲一東"


def test_an_unknown_rhyme_group_lists_the_names():
    with pytest.raises(PoemctlError, match="no 平水韵 level-tone group '狗' \\(groups: 东 冬 江 支"):
        SampleConfig(rhyme_group="狗")
