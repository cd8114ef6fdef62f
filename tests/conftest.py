"""Shared fixtures: the corpus slice, a tiny configuration, and one tiny trained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poemctl.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig

# Triton kernels (torch-lstm's --fused-steps) run in Triton's interpreter, on CPU tensors; it is chosen when
# a kernel is defined, so before any test imports one.
os.environ["TRITON_INTERPRET"] = "1"

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "chinese-poetry"
SLICE = 400  # poems: enough for a vocabulary, small enough for 2 cores


def pytest_configure(config):
    if not (CORPUS / "全唐诗" / "poet.tang.0.json").is_file():
        raise pytest.UsageError(f"the test corpus is missing: expected {CORPUS}/全唐诗 (see README)")


@pytest.fixture
def data_cfg(tmp_path) -> DataConfig:
    """The course preset on the first SLICE poems, with a cache of its own."""
    return DataConfig(corpus=str(CORPUS), cache_dir=str(tmp_path / "cache"), max_poems=SLICE)


@pytest.fixture
def tiny_cfg(data_cfg, tmp_path) -> RunConfig:
    """A tiny model trained for a few steps."""
    return RunConfig(
        data=data_cfg,
        model=ModelConfig(hidden=16, embedding=8),
        optim=OptimConfig(lr=0.01),
        train=TrainConfig(max_steps=6, batch_size=16, eval_every=3, out=str(tmp_path / "runs"), cpu=True),
    )


TINY_ARGS = ["--hidden", "16", "--embedding", "8", "--batch-size", "16", "--max-poems", str(SLICE), "--cpu"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """The run folder of one tiny CLI training run, shared by the tests that only read it."""
    from poemctl.cli import app

    tmp = tmp_path_factory.mktemp("trained")
    args = ["train", *TINY_ARGS, "--max-steps", "20", "--eval-every", "10", "--corpus", str(CORPUS)]
    args += ["--cache-dir", str(tmp / "cache"), "--out", str(tmp / "runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir
