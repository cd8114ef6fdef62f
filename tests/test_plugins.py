"""Plugins: discovery, the third-party test package (tests/plugin_pkg), optimizer options, compare and plot."""

import json
import math
import subprocess
import sys
import warnings

import pytest
import torch
from typer.testing import CliRunner

from poemctl.cli import app
from poemctl.config import ModelConfig, OptimConfig, RunConfig, TrainConfig
from poemctl.registry import MODELS, Registry
from poemctl.train import train
from tests.conftest import CORPUS, TINY_ARGS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_third_party_plugins_are_listed_with_their_package():
    result = run("plugins")
    assert result.exit_code == 0, result.output
    assert "sign-sgd" in result.output and "echo-lstm" in result.output
    assert "poemctl-testplugin" in result.output


def test_a_broken_plugin_warns_and_everything_else_works():
    with pytest.warns(UserWarning, match="'broken-opt' from poemctl-testplugin failed to load"):
        names = [p.name for p in Registry("optimizer", "poemctl.optimizers").plugins()]
    assert "broken-opt" not in names and "adam" in names and "sign-sgd" in names
    result = run("train", "--optimizer", "broken-opt", "--corpus", CORPUS)
    assert result.exit_code == 2 and "broken-opt" in result.output and "broken on purpose" in result.output


def test_environment_switches_third_party_plugins_off(monkeypatch):
    monkeypatch.setenv("POEMCTL_NO_PLUGINS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the broken plugin is not even looked at
        optimizers = Registry("optimizer", "poemctl.optimizers")
        models = Registry("model", "poemctl.models")
        assert "sign-sgd" not in optimizers.names() and "adam" in optimizers.names()
        assert "echo-lstm" not in models.names() and "torch-lstm" in models.names()


def test_train_with_the_third_party_optimizer_and_model(tmp_path):
    result = run(
        "train",
        *TINY_ARGS,
        "--model",
        "echo-lstm",
        "--optimizer",
        "sign-sgd",
        "--lr",
        "0.001",
        "--max-steps",
        "3",
        "--corpus",
        CORPUS,
        "--cache-dir",
        tmp_path / "c",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    assert run_dir.name.endswith("echo-lstm")
    sample = run("sample", "月", "--ckpt", run_dir / "last.safetensors", "--seed", "1")
    assert sample.exit_code == 0 and sample.output.startswith("月")


BUILTIN_OPTIMIZERS = ["sgd", "momentum", "adagrad", "adam", "adamw", "rmsprop", "sign-sgd"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["torch-lstm", "numpy-lstm", "cudnn-lstm"])
def test_every_optimizer_with_every_model(model, data_cfg, tmp_path):
    for name in BUILTIN_OPTIMIZERS:
        cfg = RunConfig(
            data=data_cfg,
            model=ModelConfig(hidden=8, embedding=4),
            optim=OptimConfig(name=name, lr=0.01),
            train=TrainConfig(model=model, max_steps=2, batch_size=8, out=str(tmp_path / name), cpu=True),
        )
        result = train(cfg)
        assert result.steps == 2 and math.isfinite(result.last_perplexity), (model, name)
        from poemctl import checkpoint

        trained, _ = checkpoint.load(result.run_dir / "last.safetensors")
        torch.manual_seed(0)
        fresh = MODELS.get(model)(trained.cfg)  # same seed as training: the initial weights
        assert not torch.equal(trained.output.weight, fresh.output.weight), (model, name)


@pytest.mark.parametrize(
    "args, text",
    [
        (["--momentum", "1.5"], "--momentum must be in [0, 1)"),
        (["--lr", "-0.1"], "--lr must be greater than 0"),
        (["--opt-arg", "nonsense"], "key=value"),
        (["--optimizer", "momentum", "--opt-arg", "bogus=1"], "optimizer 'momentum'"),
        (["--betas", "0.9", "1.2"], "--betas"),
    ],
)
def test_optimizer_options_are_validated(args, text, tmp_path):
    result = run("train", *TINY_ARGS, "--corpus", CORPUS, "--cache-dir", tmp_path / "c", "--out", tmp_path / "r", *args)
    assert result.exit_code == 2, result.output
    assert text in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_opt_arg_reaches_the_optimizer(tmp_path):
    result = run(
        "train",
        *TINY_ARGS,
        "--optimizer",
        "momentum",
        "--opt-arg",
        "nesterov=true",
        "--max-steps",
        "2",
        "--corpus",
        CORPUS,
        "--cache-dir",
        tmp_path / "c",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 0, result.output
    import json

    (run_dir,) = (tmp_path / "r").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["optim"]["extra"] == [["nesterov", True]]


def test_compare_draws_one_curve_per_optimizer(tmp_path, monkeypatch):
    import poemctl.plots

    drawn = {}
    real = poemctl.plots.plot_runs
    monkeypatch.setattr(poemctl.plots, "plot_runs", lambda *a, **k: drawn.update(real(*a, **k)) or drawn)
    result = run(
        "compare",
        "--optimizers",
        "sgd,adam",
        *TINY_ARGS,
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--corpus",
        CORPUS,
        "--cache-dir",
        tmp_path / "c",
        "--out",
        tmp_path / "cmp",
    )
    assert result.exit_code == 0, result.output
    png = tmp_path / "cmp" / "compare.png"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    both = ["sgd", "adam"]
    assert drawn == {"Training loss": both, "Test perplexity": both, "Test perplexity against time": both}
    assert "sgd" in result.output and "adam" in result.output and "best test ppl" in result.output


def test_compare_tables_the_time_each_optimizer_needs_to_a_target(tiny_cfg, tmp_path):
    from dataclasses import replace

    from poemctl.compare import compare

    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, max_steps=60, target_ppl=1500))
    rows, _ = compare(cfg, ["sgd", "adam"], tmp_path / "cmp", say=lambda *a: None)
    sgd, adam = rows
    assert adam.steps == adam.steps_to_target < 60  # stopped where it got there
    assert 0 < adam.minutes_to_target <= adam.training_minutes
    assert sgd.steps_to_target is None and sgd.steps == 60  # lr 0.01 SGD never gets there
    evals = [json.loads(x) for x in (adam.run_dir / "metrics.jsonl").read_text().splitlines() if "test_perp" in x]
    assert evals[-1]["test_perplexity"] <= 1500 < min(e["test_perplexity"] for e in evals[:-1])
    assert 0 < evals[-1]["train_time"] < evals[-1]["wall_time"]  # evaluations are not training time
    args = [*TINY_ARGS, "--max-steps", "9", "--eval-every", "3", "--corpus", CORPUS, "--cache-dir", tmp_path / "c"]
    result = run("compare", "--optimizers", "adam", *args, "--target-ppl", "1500", "--out", tmp_path / "cli")
    assert result.exit_code == 0 and "minutes to" in result.output, result.output


def test_compare_rejects_unknown_optimizer_before_training(tmp_path):
    result = run("compare", "--optimizers", "sgd,adma", "--corpus", CORPUS, "--out", tmp_path / "cmp")
    assert result.exit_code == 2 and "did you mean 'adam'" in result.output
    assert not (tmp_path / "cmp").exists()


def test_plot_command(trained, tmp_path):
    result = run("plot", trained, trained, "-o", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run("plot", tmp_path / "nothing", "-o", tmp_path / "d.png")
    assert bad.exit_code == 2 and "no metrics" in bad.output


def test_plot_labels_name_the_curves(trained, tmp_path, monkeypatch):
    import poemctl.plots

    drawn = {}
    real = poemctl.plots.plot_runs
    monkeypatch.setattr(poemctl.plots, "plot_runs", lambda *a, **k: drawn.update(real(*a, **k)) or drawn)
    result = run("plot", trained, trained, "--label", "first", "--label", "second", "-o", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert drawn["Test perplexity"] == ["first", "second"]
    bad = run("plot", trained, trained, "--label", "only-one", "-o", tmp_path / "d.png")
    assert bad.exit_code == 2 and "give one --label per run: 2 runs, 1 labels" in bad.output


@pytest.mark.slow
def test_the_test_plugins_are_not_installed_where_users_run_poemctl():
    # the tests register tests/plugin_pkg in their own process only (conftest.register_test_plugins): a
    # fresh poemctl process in the same environment sees no third-party plugin and prints no warning
    proc = subprocess.run([sys.executable, "-m", "poemctl", "plugins"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "adam" in proc.stdout and "sign-sgd" not in proc.stdout and "echo-lstm" not in proc.stdout
    assert "warning" not in proc.stderr


def test_a_run_of_one_step_draws_visible_points(tiny_cfg, tmp_path):
    from dataclasses import replace

    import matplotlib.pyplot as plt

    from poemctl.plots import plot_runs
    from poemctl.train import train

    result = train(replace(tiny_cfg, train=replace(tiny_cfg.train, max_steps=1)))
    seen = {}
    real = plt.close
    try:
        plt.close = lambda fig: seen.setdefault("fig", fig)
        plot_runs([result.run_dir], tmp_path / "one.png")
    finally:
        plt.close = real
    for ax in seen["fig"].axes:
        (line,) = ax.get_lines()
        assert line.get_marker() == "o" and len(line.get_xdata()) == 1
