import json
import multiprocessing
import re
import signal
import time

import pytest
from typer.testing import CliRunner

from poemctl.bench import _results, _round, _Run, step_products
from poemctl.cli import app
from poemctl.config import BenchConfig, DataConfig
from poemctl.errors import PoemctlError
from tests.conftest import CORPUS, SLICE

runner = CliRunner()


def test_step_products_count_forward_and_backward():
    products = step_products(B=2, T=3, scored=5, E=4, H=6, V=7)
    assert len(products) == 3 * (1 + 3 + 1)  # each forward product and its two backward ones
    assert products[0] == (6, 4, 24) and (5, 6, 7) in products


@pytest.mark.slow
def test_bench_table_has_every_model_and_the_ratio(tmp_path):
    args = ["bench", "--models", "cudnn-lstm,torch-lstm", "--steps", "2", "--repeats", "2", "--batch-size", "8"]
    args += ["--corpus", str(CORPUS), "--cache-dir", str(tmp_path), "--max-poems", str(SLICE)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    assert set(rows) >= {"cudnn-lstm", "torch-lstm"}
    assert rows["cudnn-lstm"].split("│")[5].strip() == "1.00 (1.00–1.00)"  # the reference against itself
    ratio, low, high = map(
        float, re.match(r"([\d.]+) \(([\d.]+)–([\d.]+)\)", rows["torch-lstm"].split("│")[5].strip()).groups()
    )
    assert low <= ratio <= high
    assert "× cudnn-lstm" in result.output
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert [r["model"] for r in document["results"]] == ["cudnn-lstm", "torch-lstm"]
    assert document["results"][0]["ratio"] == 1.0 and document["config"]["steps"] == 2


def test_bench_rejects_an_unknown_model(tmp_path):
    result = runner.invoke(
        app, ["bench", "--models", "torch-lstn", "--corpus", str(CORPUS), "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "torch-lstm" in result.output  # the closest match is suggested


def test_bench_cuda_graphs_need_the_cuda_device(tmp_path):
    result = runner.invoke(app, ["bench", "--cuda-graphs", "--corpus", str(CORPUS), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--cuda-graphs needs --device cuda" in result.output


def _fake(name, data, cfg, seed, conn):
    """A model's process that answers every step at once, stamping when it ran; torch-lstm's dies at step 3."""
    conn.send("ready")
    step = 0
    while conn.recv() == "step":
        step += 1
        if name == "torch-lstm" and cfg.steps == 99 and step == 3:
            raise SystemExit(3)  # as a process out of GPU memory would
        conn.send((time.monotonic(), 0.1))
    conn.send((0.01, 100.0))


@pytest.mark.slow
def test_a_rounds_processes_take_turns_step_by_step():
    cfg = BenchConfig(models=("cudnn-lstm", "torch-lstm", "numpy-lstm"), steps=4)
    steps = []
    runs = _round(DataConfig(), cfg, 0, target=_fake, progress=lambda: steps.append(1))
    assert len(steps) == 3 * (4 + 2)  # progress after every model's step, warm-ups included
    stamps = [run.load_s for run in runs]  # the fake stamps each step's time in load_s
    assert all(len(s) == 4 for s in stamps)  # the two warm-up steps are dropped
    for i in range(3):  # every model's step i ran before any model's step i+1
        assert max(s[i] for s in stamps) < min(s[i + 1] for s in stamps)
    assert [run.matmul_s for run in runs] == [0.01] * 3


def test_the_ratio_pairs_steps_of_the_same_turn():
    cfg = BenchConfig(models=("ref", "fast"), steps=3, repeats=2)
    drift = [[1.0, 3.0, 0.5], [2.0, 0.4, 5.0]]  # the machine's speed, turn by turn, in each round
    turn_ratios = [1.2, 1.25, 1.3]  # the second model is this much faster within each turn
    rounds = [
        [
            _Run(d, [0.0] * 3, 0.5, 10.0),
            _Run([x / r for x, r in zip(d, turn_ratios, strict=True)], [0.0] * 3, 0.5, 10.0),
        ]
        for d in drift
    ]
    ref, fast = _results(cfg, 79, rounds)
    assert ref.ratio == 1.0 and ref.ratio_range == (1.0, 1.0)
    # the ratio of the medians would read 1.2 here: the medians come from different turns
    assert fast.ratio == pytest.approx(1.25) and fast.ratio_range == pytest.approx((1.25, 1.25))
    assert fast.run_ms == pytest.approx((1000 / 1.2, 2000 / 1.2))  # each round's median step


@pytest.mark.slow
def test_a_process_that_dies_is_an_error_not_a_hang():
    def hung(*_):
        pytest.fail("the bench still waits for a process that died")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        cfg = BenchConfig(models=("cudnn-lstm", "torch-lstm"), steps=99)
        with pytest.raises(PoemctlError, match=r"the torch-lstm run failed \(its process exited with code 3"):
            _round(DataConfig(), cfg, 0, target=_fake)
        assert not multiprocessing.active_children()  # the reference's process, still waiting, was ended too
    finally:
        signal.alarm(0)
