"""--resume checks the run folder: its config, its state against the config, and the corpus it began with."""

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from poemctl.cli import app
from poemctl.state import STATE_FILE
from tests.conftest import CORPUS, TINY_ARGS

runner = CliRunner()


def _train(tmp_path, name, *extra, corpus=CORPUS):
    args = ["train", *TINY_ARGS, "--max-steps", "3", "--corpus", str(corpus), "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, [*args, *extra, "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / name).iterdir()
    return run


def _resume(run):
    return runner.invoke(app, ["train", "--resume", str(run)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    return tmp, _train(tmp, "a"), _train(tmp, "b", "--hidden", "12")


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / run.name)
    return tmp_path / run.name


def test_another_runs_state_is_refused_with_what_differs(runs, tmp_path):
    _, a, b = runs
    run = _copy(a, tmp_path)
    shutil.copy(b / STATE_FILE, run / STATE_FILE)
    result = _resume(run)
    assert result.exit_code == 2
    assert f"{run / STATE_FILE} does not fit the run's configuration: size mismatch for" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": {"hidden": 16}}, "config.json: data is missing"),
        ({"data": {}, "model": {"hidden": 16}, "optim": {}, "train": {}}, "config.json: data.corpus is missing"),
        ([], "config.json is not a table of settings (got list)"),
    ],
)
def test_a_config_that_is_not_a_whole_config_is_refused(runs, tmp_path, config, message):
    run = _copy(runs[1], tmp_path)
    (run / "config.json").write_text(json.dumps(config))
    result = _resume(run)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_corpus_changed_since_the_run_began_is_refused(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    run = _train(tmp_path, "r", corpus=corpus)
    first = next(corpus.rglob("poet.tang.0.json"))
    poems = json.loads(first.read_text(encoding="utf-8"))
    poems[0]["paragraphs"] = ["白日依山尽，黄河入海流。"]
    first.write_text(json.dumps(poems, ensure_ascii=False), encoding="utf-8")
    result = _resume(run)
    assert result.exit_code == 2
    assert f"the corpus at {corpus} changed since the run in {run} began" in result.output


def _rewrite(path, **meta_changes):
    with safe_open(path, "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(meta_changes)
    save_file(tensors, path, metadata=meta)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
POSITION = st.fixed_dictionaries(
    {k: st.integers(-2, 10**6) | st.floats() | st.text(max_size=3) for k in ("step", "epoch", "batches_done")}
    | {k: st.floats() | st.integers() for k in ("best", "last", "wall_time")}
    | {"evaluated_at": st.integers(-2, 10**6)}
)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["position", "param_groups", "optim_scalars", "schedule", "corpus_hash"]),
    value=st.one_of(JSON.map(json.dumps), POSITION.map(json.dumps), st.text(max_size=12)),
)
def test_any_state_metadata_resumes_or_is_one_line_naming_the_file(runs, tmp_path_factory, field, value):
    run = _copy(runs[1], tmp_path_factory.mktemp("state"))
    _rewrite(run / STATE_FILE, **{field: value})
    result = _resume(run)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        assert result.exit_code == 2, result.output
        lines = result.output.strip().split("\n")
        assert lines[-1].startswith("error: ") and str(run) in lines[-1], result.output


def test_resume_extends_a_finished_run_or_says_it_is_finished(tmp_path):
    run = _train(tmp_path, "r")  # 3 steps
    done = _resume(run)
    assert done.exit_code == 0 and f"the run in {run} is finished (3 steps" in " ".join(done.output.split())
    longer = runner.invoke(app, ["train", "--resume", str(run), "--max-steps", "5"])
    assert longer.exit_code == 0 and "5 steps;" in longer.output, longer.output
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3, 4, 5]
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 5  # a later resume keeps it
    assert "is finished (5 steps" in " ".join(_resume(run).output.split())


def test_resume_refuses_options_it_would_ignore(runs):
    result = runner.invoke(app, ["train", "--resume", str(runs[1]), "--lr", "0.1", "--hidden", "8"])
    assert result.exit_code == 2
    assert "only --max-steps and --epochs may extend it (given: --lr, --hidden)" in " ".join(result.output.split())
