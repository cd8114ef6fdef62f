"""Shared fixtures: the corpus slice, a tiny configuration, and one tiny trained checkpoint."""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poemctl.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig

# Triton kernels (torch-lstm's --fused-steps) run in Triton's interpreter, on CPU tensors; it is chosen when
# a kernel is defined, so before any test imports one.
os.environ["TRITON_INTERPRET"] = "1"

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "chinese-poetry"  # 500 poems in upstream's layout (its README says which)
SLICE = 400  # poems: the first file of the fixture
PLUGIN_PKG = ROOT / "tests" / "plugin_pkg"


def register_test_plugins(folder: Path) -> None:
    """Make tests/plugin_pkg's entry points visible to this process only: a dist-info folder on sys.path.

    The package is never installed, so the user's environment (its `poemctl plugins`) stays as it was.
    """
    project = tomllib.loads((PLUGIN_PKG / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = folder / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = [
        "\n".join([f"[{group}]", *(f"{name} = {target}" for name, target in eps.items())])
        for group, eps in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n\n".join(groups) + "\n")
    sys.path[:0] = [str(folder), str(PLUGIN_PKG)]


def pytest_configure(config):
    register_test_plugins(Path(tempfile.mkdtemp(prefix="poemctl-test-plugins-")))


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
