import json
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from poemctl import checkpoint
from poemctl.config import ModelConfig, RunConfig
from poemctl.data import PAD, UNK, Vocab
from poemctl.errors import PoemctlError
from poemctl.models.torch_lstm import TorchLSTM

VOCAB = Vocab((PAD, UNK, "月", "山", "。"))


def _saved(tmp_path, hidden=4):
    cfg = RunConfig(model=ModelConfig(vocab_size=len(VOCAB), hidden=hidden, embedding=3))
    model = TorchLSTM(cfg.model)
    meta = checkpoint.CheckpointMeta("torch-lstm", cfg, VOCAB, "abc123", 7, 1, 42.5)
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, model, meta)
    return path, model, meta


def test_round_trip(tmp_path):
    path, model, meta = _saved(tmp_path)
    loaded, meta2 = checkpoint.load(path)
    assert meta2 == meta
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)


def test_save_leaves_no_temporary_file(tmp_path):
    _saved(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_missing(tmp_path):
    with pytest.raises(PoemctlError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("cut", [4, 100, -50])
def test_truncated(tmp_path, cut):
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(PoemctlError, match=str(path)):
        checkpoint.load(path)


def test_not_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x80\x04\x95pickle data, never unpickled")
    with pytest.raises(PoemctlError, match="not a readable safetensors"):
        checkpoint.load(path)


def test_without_poemctl_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(PoemctlError, match="without poemctl metadata"):
        checkpoint.load(path)


def test_other_shape_is_refused(tmp_path):
    path, model, meta = _saved(tmp_path)
    bigger = TorchLSTM(replace(meta.config.model, vocab_size=len(VOCAB), hidden=6))
    other = tmp_path / "other.safetensors"
    checkpoint.save(other, bigger, meta)  # the metadata says hidden=4, the tensors are hidden=6
    with pytest.raises(PoemctlError, match="does not fit"):
        checkpoint.load(other)


def test_latest_prefers_best(tmp_path):
    with pytest.raises(PoemctlError, match="no checkpoint under"):
        checkpoint.latest(tmp_path)
    run = tmp_path / "run1"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"")
    assert checkpoint.latest(tmp_path) == run / "last.safetensors"
    (run / "best.safetensors").write_bytes(b"")
    assert checkpoint.latest(tmp_path) == run / "best.safetensors"


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os

    path, _, _ = _saved(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_float16_copy_loads_as_float32_and_writes_the_same_poems(trained, tmp_path):
    import torch

    from poemctl.checkpoint import halve, load
    from poemctl.config import SampleConfig
    from poemctl.sampling import write_poems

    halve(trained / "best.safetensors", tmp_path / "half.safetensors")
    full, meta = load(trained / "best.safetensors")
    half, half_meta = load(tmp_path / "half.safetensors")
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (trained / "best.safetensors").stat().st_size
    assert half.output.weight.dtype == torch.float32 and half_meta.vocab == meta.vocab
    torch.testing.assert_close(half.output.weight, full.output.weight, rtol=1e-3, atol=1e-3)
    cfg = SampleConfig(num=20, seed=4)
    from_half = write_poems(half, meta.vocab, "月", cfg, data=meta.config.data)
    from_full = write_poems(full, meta.vocab, "月", cfg, data=meta.config.data)
    assert sum(a == b for a, b in zip(from_half, from_full, strict=True)) >= 15  # rounding may flip a rare draw


def _with_metadata(path, **changes):
    """Rewrite the checkpoint at path with some metadata fields replaced (None: removed)."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    save_file(tensors, path, metadata=meta)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("config", "[]", r"config is not a table of settings \(got list\)"),
        ("config", "null", r"config is not a table of settings \(got NoneType\)"),
        ("config", '{"model": 3}', r"config: model is not a table of settings"),
        ("config", '{"model": {"hidden": "big"}}', r"config: \[model\] hidden must be an integer, got 'big'"),
        ("config", '{"model": {"hidden": 0}}', r"config: --hidden must be at least 1, got 0"),
        ("config", '{"model": {"hidden": 1180591620717411303424}}', r"does not fit its own metadata"),
        ("vocab", json.dumps([PAD, UNK, *"月山。江"]), r"does not fit its own metadata: embedding.weight is \(5, 3\)"),
        ("vocab", '[" ", "月"]', r"vocab: no unknown-character token '<unk>'"),
        ("vocab", '["<unk>", "月"]', r"vocab: no padding token ' '"),
        ("vocab", '[" ", "<unk>", "月", "月"]', r"vocab: a character appears twice"),
        ("vocab", '{"a": 1}', r"vocab: not a list of characters"),
        ("step", "x", r"invalid literal"),
        ("model", None, r"no 'model'"),
    ],
)
def test_metadata_that_poemctl_did_not_write_is_one_line_naming_the_file(tmp_path, field, value, message):
    path, _, _ = _saved(tmp_path)
    _with_metadata(path, **{field: value})
    with pytest.raises(PoemctlError, match=message) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_nan_weights_are_refused(tmp_path):
    path, model, meta = _saved(tmp_path)
    with torch.no_grad():
        model.lstm.bias[2] = float("nan")
    checkpoint.save(path, model, meta)
    with pytest.raises(PoemctlError, match=r"lstm.bias holds NaN or infinite values"):
        checkpoint.load(path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
PARTS = st.fixed_dictionaries(
    {},
    optional={
        "data": st.dictionaries(st.sampled_from(["seq_len", "corpus", "keep_commas", "forms", "min_freq"]), JSON),
        "model": st.dictionaries(st.sampled_from(["hidden", "embedding", "tie_weights", "output_dropout"]), JSON),
        "optim": st.dictionaries(st.sampled_from(["name", "lr", "betas", "extra"]), JSON),
        "train": st.dictionaries(st.sampled_from(["model", "epochs", "schedule", "seed"]), JSON),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["config", "vocab", "step", "epoch", "test_perplexity", "corpus_hash", "model", "format"]),
    value=st.one_of(JSON.map(json.dumps), PARTS.map(json.dumps), st.text(max_size=20)),
)
def test_any_metadata_loads_or_is_one_line_naming_the_file(tmp_path, field, value):
    path, _, _ = _saved(tmp_path)
    _with_metadata(path, **{field: value})
    try:
        model, meta = checkpoint.load(path)
    except PoemctlError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        assert isinstance(meta.config, RunConfig) and len(meta.vocab) >= 2
        model(torch.tensor([[meta.vocab.pad_id, 2]]))  # what loads, runs
