import re
import signal

import pytest
from typer.testing import CliRunner

from poemctl.bench import _in_process, step_products
from poemctl.cli import app
from poemctl.config import BenchConfig, DataConfig
from poemctl.errors import PoemctlError
from tests.conftest import CORPUS, SLICE

runner = CliRunner()


def test_step_products_count_forward_and_backward():
    products = step_products(B=2, T=3, scored=5, E=4, H=6, V=7)
    assert len(products) == 3 * (1 + 3 + 1)  # each forward product and its two backward ones
    assert products[0] == (6, 4, 24) and (5, 6, 7) in products


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


def _dies(name, data, cfg, seed, queue):
    """A run whose process dies before it reports (as one out of GPU memory would)."""
    raise SystemExit(3)


def test_a_run_whose_process_dies_is_an_error_not_a_hang():
    def hung(*_):
        pytest.fail("the bench still waits for a process that died")

    signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        with pytest.raises(PoemctlError, match=r"the torch-lstm run failed \(its process exited with code 3"):
            _in_process("torch-lstm", DataConfig(), BenchConfig(), 0, target=_dies)
    finally:
        signal.alarm(0)
