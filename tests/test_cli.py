"""The commands users type, through Typer's CliRunner."""

import json
import re
import tomllib

import pytest
from typer.testing import CliRunner

from poemctl.cli import app
from tests.conftest import CORPUS, TINY_ARGS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_explains_every_option():
    result = run("train", "--help")
    assert result.exit_code == 0
    for option in [
        "--model",
        "--optimizer",
        "--epochs",
        "--max-steps",
        "--batch-size",
        "--lr",
        "--hidden",
        "--embedding",
        "--seed",
        "--eval-every",
        "--out",
        "--cpu",
        "--keep-commas",
        "--seq-len",
    ]:
        assert option in result.output


def test_train_writes_checkpoints_and_metrics(trained):
    assert (trained / "best.safetensors").is_file() and (trained / "last.safetensors").is_file()
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "test_perplexity" in r]
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert {"epoch", "tokens_per_s", "wall_time"} <= set(steps[0])
    assert [r["step"] for r in evals] == [10, 20]
    assert steps[-1]["loss"] < steps[0]["loss"]  # it learns
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["hidden"] == 16 and config["model"]["vocab_size"] > 100


def test_sample_quatrain(trained):
    result = run("sample", "月", "--lines", "4", "--runs", trained.parent, "--seed", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 4 and lines[0][0] == "月"
    assert [line[-1] for line in lines] == ["，", "。", "，", "。"]
    assert all(len(line) == 8 for line in lines)  # 7 characters and the mark


def test_same_seed_same_poem(trained):
    ckpt = trained / "best.safetensors"
    a = run("sample", "山", "--ckpt", ckpt, "--chars", "5", "--num", "3", "--seed", "11").output
    b = run("sample", "山", "--ckpt", ckpt, "--chars", "5", "--num", "3", "--seed", "11").output
    c = run("sample", "山", "--ckpt", ckpt, "--chars", "5", "--num", "3", "--seed", "12").output
    assert a == b and a != c
    poems = a.strip().split("\n\n")
    assert len(poems) == 3 and all(len(line) == 6 for p in poems for line in p.splitlines())


def test_perplexity_matches_training(trained):
    result = run("perplexity", trained / "best.safetensors")
    assert result.exit_code == 0, result.output
    ppl = float(re.search(r"perplexity ([\d.]+) over (\d+) tokens", result.output).group(1))
    best = min(
        json.loads(x)["test_perplexity"]
        for x in (trained / "metrics.jsonl").read_text().splitlines()
        if "test_perplexity" in x
    )
    assert ppl == pytest.approx(best, rel=1e-4)
    train = run("perplexity", trained / "best.safetensors", "--split", "train")
    assert train.exit_code == 0 and "train split, 320 poems" in train.output


def test_perplexity_of_a_text_file(trained, tmp_path):
    text = tmp_path / "poems.txt"
    text.write_text("床前明月光，疑是地上霜。\n\n舉頭望明月，低頭思故鄉。\n", encoding="utf-8")
    result = run("perplexity", trained / "best.safetensors", "--text", text)
    assert result.exit_code == 0, result.output
    assert re.search(r"perplexity [\d.]+ over 22 tokens .*2 poems; \d+\.\d% unknown characters", result.output)
    assert "warning" not in result.output


def test_a_text_of_unknown_characters_is_reported_and_warned_about(trained, tmp_path):
    text = tmp_path / "latin.txt"
    text.write_text("The moon is bright tonight.\nHello world, again and again.\n", encoding="utf-8")
    result = run("perplexity", trained / "best.safetensors", "--text", text)
    assert result.exit_code == 0, result.output
    share = float(re.search(r"; ([\d.]+)% unknown characters", result.output).group(1))
    assert share > 50
    assert f"warning: {share:.1f}% of the scored characters are unknown" in " ".join(result.output.split())


def _one_line_error(result, text):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert text in result.output
    return result


@pytest.mark.parametrize(
    "args, text",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "0"], "--lr"),
        (["--seq-len", "1"], "--seq-len"),
        (["--model", "no-such-model"], "unknown model"),
        (["--optimizer", "adamm"], "did you mean 'adam'"),
        (["--cuda-graphs", "--cpu"], "--cuda-graphs needs a GPU"),
        (["--fused-steps", "--cpu"], "--fused-steps needs a GPU"),
    ],
)
def test_train_bad_input(tmp_path, args, text):
    result = run("train", *TINY_ARGS, "--corpus", CORPUS, "--out", tmp_path / "runs", *args)
    _one_line_error(result, text)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_missing_corpus(tmp_path):
    _one_line_error(run("train", "--corpus", tmp_path / "nothing", "--out", tmp_path), "poemctl data download")


def test_train_out_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run("train", *TINY_ARGS, "--corpus", CORPUS, "--out", tmp_path / "file" / "runs")
    _one_line_error(result, "cannot create a run folder")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(
    "args, text",
    [
        (["龘"], "'龘' is not in this checkpoint's vocabulary"),
        (["月", "--lines", "0"], "--lines"),
        (["月", "--chars", "6"], "--chars must be 5 or 7"),
        (["月", "--num", "0"], "--num"),
        (["月" * 29], "is longer than a poem of 4×7 characters"),
    ],
)
def test_sample_bad_input(trained, args, text):
    _one_line_error(run("sample", *args, "--ckpt", trained / "best.safetensors"), text)


def test_sample_without_any_run(tmp_path, monkeypatch):
    result = run("sample", "月", "--runs", tmp_path)  # the bundled model, said so on stderr
    assert result.exit_code == 0 and "bundled" in result.stderr and result.stdout.startswith("月")
    from poemctl import checkpoint

    monkeypatch.setattr(checkpoint, "BUNDLED", tmp_path / "none.safetensors")  # a package without one
    _one_line_error(run("sample", "月", "--runs", tmp_path), "no checkpoint under")


def test_perplexity_bad_files(tmp_path, trained):
    _one_line_error(run("perplexity", tmp_path / "missing.safetensors"), "no checkpoint at")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    _one_line_error(run("perplexity", tmp_path / "junk.safetensors"), "not a readable safetensors")
    half = tmp_path / "half.safetensors"
    half.write_bytes((trained / "best.safetensors").read_bytes()[:-100])
    _one_line_error(run("perplexity", half), str(half))
    _one_line_error(run("perplexity", trained / "best.safetensors", "--split", "dev"), "--split")


def test_data_download_from_folder(tmp_path, monkeypatch):
    from poemctl.corpus import manifest

    m = manifest()
    m["files"] = m["files"][:2]
    monkeypatch.setattr("poemctl.corpus.manifest", lambda: m)
    result = run("data", "download", "--from", CORPUS, "--dest", tmp_path / "corpus")
    assert result.exit_code == 0, result.output
    assert "2 files" in result.output
    _one_line_error(run("data", "download", "--from", tmp_path / "nowhere", "--dest", tmp_path / "x"), "cannot read")


def test_plugins_lists_builtins():
    result = run("plugins")
    assert result.exit_code == 0
    for name in ["torch-lstm", "sgd", "momentum", "adagrad", "adam"]:
        assert name in result.output


def test_train_corrupt_corpus_file_is_named(tmp_path):
    import shutil

    folder = tmp_path / "corpus" / "全唐诗"
    folder.mkdir(parents=True)
    shutil.copyfile(CORPUS / "全唐诗" / "poet.tang.0.json", folder / "poet.tang.0.json")
    (folder / "poet.tang.1000.json").write_text('[{"paragraphs": ["cut')
    result = run("train", *TINY_ARGS, "--corpus", tmp_path / "corpus", "--max-poems", "0", "--out", tmp_path / "r")
    _one_line_error(result, "corrupt corpus file poet.tang.1000.json")
    assert not (tmp_path / "r").exists()


def test_train_corpus_empty_after_filtering(tmp_path):
    folder = tmp_path / "corpus" / "全唐诗"
    folder.mkdir(parents=True)
    (folder / "poet.tang.0.json").write_text('[{"paragraphs": ["，"]}]')
    result = run("train", *TINY_ARGS, "--corpus", tmp_path / "corpus", "--out", tmp_path / "r")
    _one_line_error(result, "no poem of 2 or more characters")


def test_data_info(tmp_path):
    result = run("data", "info", "--corpus", CORPUS, "--cache-dir", tmp_path / "c", "--max-poems", "400")
    assert result.exit_code == 0, result.output
    assert "3 files" in result.output and "320 / 80 poems" in result.output and "vocabulary" in result.output
    _one_line_error(run("data", "info", "--corpus", tmp_path / "none"), "poemctl data download")


def test_every_commands_help_flows_in_paragraphs():
    from poemctl.cli import data_app

    for typer_app in (app, data_app):
        for info in typer_app.registered_commands:
            assert info.help and "\n" not in info.help.replace("\n\n", ""), info.callback.__name__


def test_print_config_merges_the_recipe_and_the_flags(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[model]\nhidden = 64\n\n[optim]\nlr = 0.002\n")
    result = run("train", "--config", recipe, "--lr", "0.005", "--print-config")
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert shown["model"]["hidden"] == 64 and shown["optim"]["lr"] == 0.005  # the flag wins over the file
    assert shown["train"]["epochs"] == 10  # neither: the default
    assert not (tmp_path / "runs").exists()


def test_train_from_a_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[data]\ncorpus = "{CORPUS}"\nmax_poems = 400\n\n[model]\nhidden = 16\nembedding = 8\n')
    result = run("train", "--config", recipe, "--max-steps", "2", "--cpu", "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["hidden"] == 16 and saved["train"]["max_steps"] == 2 and saved["data"]["max_poems"] == 400


def test_resume_takes_no_recipe(tmp_path, trained):
    _one_line_error(run("train", "--resume", trained, "--config", tmp_path / "r.toml"), "--resume uses the run's own")


def test_without_a_run_sample_and_evaluate_use_the_bundled_model(trained, tmp_path, monkeypatch):
    from poemctl import checkpoint

    monkeypatch.setattr(checkpoint, "BUNDLED", trained / "best.safetensors")
    monkeypatch.chdir(tmp_path)  # an empty folder: no runs/
    result = run("sample", "月", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "bundled" in result.stderr and result.stdout.startswith("月")
    assert run("evaluate", "--num", "3").exit_code == 0
    # a checkpoint whose corpus is not on this machine (as the bundled model's): no copy rate, a warning
    from dataclasses import replace

    model, meta = checkpoint.load(trained / "best.safetensors")
    away = replace(meta.config, data=replace(meta.config.data, corpus="data/chinese-poetry"))
    checkpoint.save(tmp_path / "away.safetensors", model, replace(meta, config=away))
    moved = run("evaluate", "--num", "3", "--ckpt", tmp_path / "away.safetensors")
    assert moved.exit_code == 0 and "copy rate is not measured" in moved.stderr
    assert re.search(r"copy_rate\s*│\s*not measured", moved.stdout), moved.stdout
    _one_line_error(run("evaluate", "--num", "3", "--corpus", tmp_path / "nowhere"), "no corpus at")
    monkeypatch.setattr(checkpoint, "BUNDLED", tmp_path / "missing.safetensors")
    _one_line_error(run("sample", "月"), "no checkpoint under runs/")


def test_version_and_completion():
    import poemctl

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"poemctl {poemctl.__version__}"
    assert "--install-completion" in run("--help").output


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (
            ["sample", "月", "--num", "2", "--seed", "1"],
            lambda d: len(d["poems"]) == 2 and d["poems"][0]["text"][0] == "月",
        ),
        (["perplexity", "CKPT"], lambda d: d["perplexity"] > 1 and d["source"] == "test split" and d["tokens"] > 0),
        (["evaluate", "--num", "10"], lambda d: d["poems"] == 10 and 0 <= d["rhymed"] <= 1),
        (["data", "info", "--max-poems", "400"], lambda d: d["poems"] == 400 and d["train"] == 320),
        (["plugins"], lambda d: {"torch-lstm", "adam", "muon"} <= {p["name"] for p in d}),
        (["gradcheck", "--model", "numpy-reference"], lambda d: d["pass"] and len(d["checks"]) == 6),
    ],
    ids=["sample", "perplexity", "evaluate", "data-info", "plugins", "gradcheck"],
)
def test_json_is_one_document_alone_on_stdout(trained, tmp_path, args, check):
    ckpt = str(trained / "best.safetensors")
    args = [ckpt if a == "CKPT" else a for a in args]
    if args[0] in ("sample", "evaluate"):
        args += ["--ckpt", ckpt]
    if args[0] == "data":
        args += ["--corpus", str(CORPUS), "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert check(json.loads(result.stdout)), result.stdout


def test_sample_and_evaluate_name_things_as_train_does(trained):
    runs = str(trained.parent)
    sample = run("sample", "山", "--out", runs, "--seed", "1")  # train writes with --out; sample finds there too
    assert sample.exit_code == 0 and sample.output.startswith("山"), sample.output
    assert run("sample", "山", "--runs", runs, "--seed", "1").output == sample.output
    evaluate = run("evaluate", "山", "--num", "5", "--runs", runs, "--json")  # the beginning as an argument
    assert evaluate.exit_code == 0, evaluate.output
    assert json.loads(evaluate.stdout)["poems"] == 5
