import os

import pytest

from poemctl.config import (
    BenchConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    read_recipe,
    to_toml,
)
from poemctl.errors import PoemctlError
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "make, text",
    [
        (lambda: TrainConfig(batch_size=0), "--batch-size"),
        (lambda: TrainConfig(epochs=0), "--epochs"),
        (lambda: TrainConfig(mixed_precision="fp8"), "--mixed-precision"),
        (lambda: OptimConfig(lr=0), "--lr"),
        (lambda: OptimConfig(lr=-1), "--lr"),
        (lambda: OptimConfig(momentum=1.0), "--momentum"),
        (lambda: DataConfig(seq_len=1), "--seq-len"),
        (lambda: DataConfig(min_freq=0), "--min-freq"),
        (lambda: ModelConfig(hidden=0), "--hidden"),
        (lambda: BenchConfig(models=()), "--models"),
        (lambda: BenchConfig(device="tpu"), "--device"),
        (lambda: BenchConfig(steps=0), "--steps"),
        (lambda: BenchConfig(repeats=0), "--repeats"),
        (lambda: BenchConfig(cuda_graphs=True), "--cuda-graphs needs --device cuda"),
        (lambda: BenchConfig(fused_steps=True), "--fused-steps needs --device cuda"),
    ],
)
def test_invalid_values_are_one_line_errors(make, text):
    with pytest.raises(PoemctlError, match=text):
        make()


def test_defaults_are_the_course():
    cfg = RunConfig()
    assert (cfg.train.batch_size, cfg.model.hidden, cfg.model.embedding) == (64, 128, 128)
    assert (cfg.optim.name, cfg.optim.lr, cfg.train.epochs) == ("adam", 0.01, 10)
    assert (cfg.data.seq_len, cfg.data.min_freq, cfg.data.keep_commas, cfg.data.traditional) == (80, 2, False, False)


def test_round_trip_through_dict():
    cfg = RunConfig(optim=OptimConfig(betas=(0.8, 0.9), extra=(("nesterov", 1.0),)), train=TrainConfig(seed=3))
    import json

    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_a_recipe_sets_what_it_names_and_leaves_the_rest(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[model]\nhidden = 64\n\n[optim]\nname = "momentum"\nextra = [["nesterov", true]]\n')
    cfg = read_recipe(path)
    assert cfg.model.hidden == 64 and cfg.model.embedding == ModelConfig().embedding
    assert cfg.optim.name == "momentum" and cfg.optim.extra == (("nesterov", True),)
    assert cfg.train == TrainConfig() and cfg.data == DataConfig()


def test_to_toml_reads_back_to_the_same_config(tmp_path):
    cfg = RunConfig(
        data=DataConfig(keep_commas=True, corpus="语料/诗"),
        optim=OptimConfig(betas=(0.8, 0.95), extra=(("foreach", False), ("nesterov", True))),
        train=TrainConfig(max_steps=7, clip=0.5, mixed_precision="bf16"),
    )
    path = tmp_path / "r.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    assert read_recipe(path) == cfg


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\nhiden = 3\n", "[model] has no setting 'hiden'"),
        ("[modle]\nhidden = 3\n", "no section [modle]"),
        ("[model]\nhidden = 'x'\n", "[model] hidden must be an integer, got 'x'"),
        ("[train]\ncpu = 1\n", "[train] cpu must be true or false"),
        ("[optim]\nbetas = [0.9, 'x']\n", "betas must be a list of 2 numbers"),
        ("[optim]\nlr = -1\n", "--lr must be greater than 0"),
        ("[model\n", "is not valid TOML"),
        ("model = 3\n", "[model] must be a table"),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PoemctlError) as e:
        read_recipe(path)
    assert message in str(e.value) and ("bad.toml" in str(e.value) or "--lr" in str(e.value))


def test_the_repositorys_recipes_read(tmp_path):
    recipes = sorted((ROOT / "recipes").glob("*.toml"))
    assert recipes
    for path in recipes:
        read_recipe(path)


def test_poemctl_home_roots_the_default_folders(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "POEMCTL_HOME": str(tmp_path)}
    code = "from poemctl.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "train", "--print-config"], env=env, capture_output=True, text=True
    )
    assert f'corpus = "{tmp_path}/data/chinese-poetry"' in done.stdout
    assert f'cache_dir = "{tmp_path}/data/cache"' in done.stdout and f'out = "{tmp_path}/runs"' in done.stdout
    elsewhere = subprocess.run(
        [sys.executable, "-c", code, "data", "info"], env=env, capture_output=True, text=True, cwd="/"
    )
    assert elsewhere.returncode == 2 and f"no corpus at {tmp_path}/data/chinese-poetry" in elsewhere.stderr
