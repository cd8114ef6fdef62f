"""Post-hoc logit adjustment (poemctl/adjust.py, `poemctl adjust`)."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from poemctl import checkpoint
from poemctl.adjust import adjust, character_prior, tilt
from poemctl.cli import app
from poemctl.data import PAD, UNK, Vocab, is_normal, load_corpus
from poemctl.errors import PoemctlError

runner = CliRunner()
VOCAB = Vocab((PAD, UNK, "，", "月", "山", "水"))


def test_the_prior_counts_scored_targets_with_add_one():
    pad = VOCAB.pad_id
    # Targets are rows[:, 1:]: 月 月 山 and one padding; the first column is never a target.
    rows = torch.tensor([[4, 3, 3, 4], [5, pad, pad, pad]])
    log_prior = character_prior(rows, VOCAB)
    counts = torch.tensor([1, 1, 1, 3, 2, 1], dtype=torch.float64)  # 月 twice + 1, 山 once + 1, the rest 0 + 1
    assert torch.allclose(log_prior, (counts / counts.sum()).log())
    assert math.isclose(float(log_prior.exp().sum()), 1.0)


def test_tilt_moves_written_characters_only_and_favours_the_rare():
    log_prior = torch.tensor([-1.0, -2.0, -0.5, -1.0, -6.0, -3.0], dtype=torch.float64)
    written = torch.tensor([is_normal(t) for t in VOCAB.tokens])
    assert written.tolist() == [False, False, False, True, True, True]
    bias = torch.zeros(6)
    tilted = tilt(bias, log_prior, written, 0.5)
    assert tilted[:3].tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(tilted[3:], torch.tensor([0.5, 3.0, 1.5]))
    # Equal logits before: after the tilt the rarest character (山) ranks first.
    assert int(tilted.argmax()) == VOCAB.index["山"]


def test_adjust_writes_the_tilted_bias_and_records_tau(trained, tmp_path):
    src = trained / "best.safetensors"
    before, meta = checkpoint.load(src)
    done = adjust(src, 0.3, tmp_path / "a.safetensors")
    after, meta_a = checkpoint.load(done.path)
    data = load_corpus(meta.config.data, vocab=meta.vocab)
    written = torch.tensor([is_normal(t) for t in meta.vocab.tokens])
    expected = before.output.bias.double() - 0.3 * character_prior(data.train, meta.vocab) * written
    assert torch.allclose(after.output.bias.double(), expected, atol=1e-6)
    assert torch.equal(after.output.weight, before.output.weight)
    assert torch.equal(after.lstm.weight_hh, before.lstm.weight_hh)
    assert meta_a.logit_adjust == pytest.approx(0.3)
    assert meta_a.test_perplexity == pytest.approx(done.perplexity_after)
    assert done.perplexity_before == pytest.approx(meta.test_perplexity, rel=1e-4)
    # A second adjustment adds to the first.
    again = adjust(done.path, 0.1, tmp_path / "b.safetensors")
    assert again.total_tau == pytest.approx(0.4) and checkpoint.load(again.path)[1].logit_adjust == pytest.approx(0.4)


def test_checkpoints_without_the_key_read_as_unadjusted(trained):
    assert checkpoint.load(trained / "best.safetensors")[1].logit_adjust == 0.0


def test_adjust_keeps_half_precision(trained, tmp_path):
    half = tmp_path / "half.safetensors"
    checkpoint.halve(trained / "best.safetensors", half)
    adjust(half, 0.2, tmp_path / "a.safetensors")
    assert checkpoint.stored_dtype(tmp_path / "a.safetensors") == torch.float16


@pytest.mark.parametrize("tau", [0.0, -0.5, math.inf, math.nan])
def test_a_bad_tau_is_refused(trained, tmp_path, tau):
    with pytest.raises(PoemctlError, match="--tau"):
        adjust(trained / "best.safetensors", tau, tmp_path / "a.safetensors")


def test_the_cli_prints_json_and_refuses_bad_input_in_one_line(trained, tmp_path):
    dst = tmp_path / "a.safetensors"
    result = runner.invoke(app, ["adjust", str(trained / "best.safetensors"), "-o", str(dst), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tau"] == 0.4 and report["path"] == str(dst) and dst.is_file()
    bad = runner.invoke(app, ["adjust", str(trained / "best.safetensors"), "-o", str(dst), "--tau", "-1"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1 and "--tau" in bad.output
    missing = runner.invoke(app, ["adjust", str(tmp_path / "none.safetensors"), "-o", str(dst)])
    assert missing.exit_code == 2 and "no checkpoint" in missing.output
