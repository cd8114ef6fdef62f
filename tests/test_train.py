"""The training loop: several processes, gradient accumulation, resume after a kill, atomic writes, NaN."""

import importlib.util
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from poemctl import checkpoint
from poemctl.config import RunConfig, TrainConfig
from poemctl.errors import PoemctlError
from poemctl.models.torch_lstm import TorchLSTM
from poemctl.registry import MODELS
from poemctl.train import TrainingStopped, train
from tests.conftest import CORPUS, ROOT

ARGS = ["--hidden", "16", "--embedding", "8", "--max-poems", "400", "--corpus", str(CORPUS), "--eval-every", "10"]


def losses(out):
    (run,) = out.iterdir()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r], run


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poemctl(*args, launch=None, **kwargs):
    """Run poemctl in a real subprocess from the repository root (through accelerate launch if asked)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    bin_dir = os.path.dirname(sys.executable)
    cmd = (
        [os.path.join(bin_dir, "poemctl")]
        if launch is None
        else [os.path.join(bin_dir, "accelerate"), "launch", *launch, "poemctl"]
    )
    return subprocess.Popen(
        [*cmd, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("model", ["torch-lstm", "numpy-lstm"])
@pytest.mark.slow
def test_two_processes_equal_one_with_twice_the_batch(tmp_path, model):
    common = [*ARGS, "--model", model, "--max-steps", "20", "--cache-dir", tmp_path / "cache"]
    launch = ["--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    two = poemctl("train", *common, "--batch-size", "8", "--out", tmp_path / "two", launch=launch)
    output = two.communicate(timeout=300)[0]
    assert two.returncode == 0, output
    one = poemctl("train", *common, "--batch-size", "16", "--out", tmp_path / "one")
    assert one.wait(timeout=300) == 0
    (a, run_two), (b, _) = losses(tmp_path / "two"), losses(tmp_path / "one")
    assert len(a) == len(b) == 20
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    assert output.count("20 steps;") == 1  # only the main process reports and writes
    assert (run_two / "best.safetensors").is_file()


def test_grad_accum_equals_a_larger_batch(tiny_cfg, tmp_path):
    big = train(replace(tiny_cfg, train=replace(tiny_cfg.train, batch_size=16, max_steps=8, out=str(tmp_path / "a"))))
    acc = train(
        replace(
            tiny_cfg, train=replace(tiny_cfg.train, batch_size=8, grad_accum=2, max_steps=8, out=str(tmp_path / "b"))
        )
    )
    (la, _), (lb, _) = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(la) == len(lb) == 8
    assert max(abs(x - y) for x, y in zip(la, lb, strict=True)) < 1e-5
    wa = load_file(big.run_dir / "last.safetensors")
    wb = load_file(acc.run_dir / "last.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-4, rtol=1e-3)  # Adam magnifies rounding near g=0


def _same_weights(a, b, atol=1e-6):
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--schedule", "cosine", "--warmup-steps", "10", "--embedding-dropout", "0.1", "--output-dropout", "0.2"],
        ["--schedule", "plateau", "--warmup-steps", "5", "--output-dropout", "0.2", "--lr", "0.05"],
        ["--tie-weights", "--embedding", "16", "--embedding-dropout", "0.1", "--model", "numpy-lstm"],
        ["--optimizer", "muon", "--momentum", "0.95", "--schedule", "cosine"],
        ["--optimizer", "schedulefree-adamw", "--lr", "0.003"],
        ["--optimizer", "lion", "--lr", "0.001"],
        ["--optimizer", "torch:NAdam", "--schedule", "linear"],
    ],
    ids=["plain", "cosine-and-dropout", "plateau-and-dropout", "tied-numpy", "muon", "schedulefree", "lion", "nadam"],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, extra):
    _stop_resume_compare(tmp_path, extra, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, sig):
    """Ctrl-C mid-step stops after that step and saves it: no step lost, none trained twice."""
    output = _stop_resume_compare(tmp_path, ["--schedule", "cosine", "--output-dropout", "0.2"], sig)
    assert "the state is saved. Resume with: poemctl train --resume" in output
    assert "Traceback" not in output


def _stop_resume_compare(tmp_path, extra, sig) -> str:
    """Run, stop with sig well into the run, resume; the weights equal an uninterrupted run's. The output."""
    common = [
        *ARGS,
        *extra,
        "--max-steps",
        "120",
        "--epochs",
        "10",
        "--batch-size",
        "8",
        "--save-every",
        "7",
        "--cache-dir",
        tmp_path / "cache",
    ]
    ref = poemctl("train", *common, "--out", tmp_path / "ref")
    assert ref.wait(timeout=300) == 0
    victim = poemctl("train", *common, "--out", tmp_path / "killed")
    deadline = time.time() + 240
    metrics = None
    while time.time() < deadline:  # stop it for real once it is well into the run
        found = list((tmp_path / "killed").glob("*/metrics.jsonl"))
        if found and found[0].read_text().count('"loss"') >= 45:
            metrics = found[0]
            break
        time.sleep(0.02)
    victim.send_signal(sig)
    stopped = victim.communicate(timeout=60)[0]
    assert metrics is not None
    assert victim.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 1), stopped
    run = metrics.parent
    assert not (run / "last.safetensors").is_file() or metrics.read_text().count('"loss"') < 120
    resumed = poemctl("train", "--resume", run)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    (ref_run,) = (tmp_path / "ref").iterdir()
    _same_weights(ref_run / "last.safetensors", run / "last.safetensors")
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 121))  # no step lost or logged twice
    return stopped


@pytest.mark.slow
def test_ctrl_c_saves_and_prints_the_resume_command(tmp_path):
    common = [
        *ARGS,
        "--max-steps",
        "400",
        "--epochs",
        "20",
        "--batch-size",
        "8",
        "--save-every",
        "0",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        tmp_path / "runs",
    ]
    proc = poemctl("train", *common)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if found and found[0].read_text().count('"loss"') >= 20:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output
    (run,) = (tmp_path / "runs").iterdir()
    assert f"poemctl train --resume {run}" in output.replace("\n", "")
    assert "Traceback" not in output
    assert (run / "state.safetensors").is_file()


def test_resume_of_a_folder_without_state(tmp_path, tiny_cfg):
    from typer.testing import CliRunner

    from poemctl.cli import app

    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a poemctl run folder" in result.output
    (tmp_path / "config.json").write_text(json.dumps(tiny_cfg.to_dict()))
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "holds no training state" in result.output


def test_a_crash_during_a_save_keeps_the_previous_checkpoint(tiny_cfg, monkeypatch):
    result = train(tiny_cfg)
    path = result.run_dir / "last.safetensors"
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("poemctl.checkpoint.save_file", crash)
    model, meta = checkpoint.load(path)
    with pytest.raises(PoemctlError, match="No space left on device"):
        checkpoint.save(path, model, meta)
    assert path.read_bytes() == before
    assert [p.name for p in result.run_dir.iterdir() if p.name.startswith(".")] == []  # no temporary left
    checkpoint.load(path)


def test_full_disk_during_training_is_a_one_line_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from poemctl.cli import app

    def full(tensors, filename, metadata=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("poemctl.checkpoint.save_file", full)
    result = CliRunner().invoke(
        app, ["train", *ARGS, "--max-steps", "3", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output


class NanAfter(TorchLSTM):
    """torch-lstm whose loss turns NaN from its 12th training call."""

    calls = 0

    def forward(self, tokens, state=None, targets=None, ignore_index=-100):
        out = super().forward(tokens, state, targets, ignore_index)
        if targets is not None and self.training:
            NanAfter.calls += 1
            if NanAfter.calls >= 12:
                return out._replace(nll=out.nll * math.nan)
        return out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cfg):
    MODELS.register("nan-after", NanAfter)
    try:
        with pytest.raises(TrainingStopped, match=r"loss became nan at step 12.*last good checkpoint"):
            train(replace(tiny_cfg, train=replace(tiny_cfg.train, model="nan-after", max_steps=30, eval_every=5)))
    finally:
        MODELS.unregister("nan-after")
    (run,) = Path(tiny_cfg.train.out).iterdir()
    model, meta = checkpoint.load(run / "last.safetensors", "torch-lstm")
    assert meta.step == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    "mode, model, text",
    [
        ({"cuda_graphs": True}, "cudnn-lstm", "--cuda-graphs: cudnn-lstm has no CUDA-graph mode (torch-lstm has)"),
        ({"fused_steps": True}, "cudnn-lstm", "--fused-steps: cudnn-lstm has no fused-step mode (torch-lstm has)"),
        ({"fused_steps": True}, "torch-lstm", "--fused-steps needs Triton: pip install triton"),
    ],
)
def test_gpu_modes_are_checked_before_any_work(monkeypatch, mode, model, text):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # past the no-GPU check, as on a GPU machine
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(PoemctlError) as err:
        train(RunConfig(train=TrainConfig(model=model, **mode)))
    assert str(err.value) == text


def test_a_time_budget_stops_after_its_minutes_and_evaluates_there(tiny_cfg):
    cfg = replace(
        tiny_cfg, train=replace(tiny_cfg.train, max_steps=10_000, epochs=1000, eval_every=0, time_budget=1e-4)
    )
    result = train(cfg)
    records, _ = losses(result.run_dir.parent)
    evals = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines() if "test_perp" in x]
    assert result.steps == len(records) < 10  # 6 ms of training: a step or a few
    assert evals[-1]["step"] == result.steps and evals[-1]["train_time"] >= 6e-3
    again = train(None, resume=result.run_dir)  # a finished budget stays finished
    assert again.steps == result.steps


def test_in_a_log_training_prints_a_plain_line_every_n_steps(tmp_path):
    args = [*ARGS, "--max-steps", "12", "--batch-size", "16", "--log-every", "5", "--eval-every", "6"]
    proc = poemctl("train", *args, "--cache-dir", tmp_path / "c", "--out", tmp_path / "r")
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    steps = re.findall(r"^step (\d+)/12  epoch 1  loss [\d.]+  lr ", output, re.M)
    assert steps == ["5", "10", "12"]
    assert re.findall(r"^step (\d+)  epoch 1  test perplexity [\d.]+$", output, re.M) == ["6", "12"]
    assert "━" not in output  # no bar in a log


def test_report_to_tensorboard_logs_what_metrics_jsonl_logs(tiny_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(replace(tiny_cfg, train=replace(tiny_cfg.train, report_to=("tensorboard",))))
    (events,) = (result.run_dir / "tracks").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    logged = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses_ = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("train/loss")] == losses_
    ppls = [(r["step"], r["test_perplexity"]) for r in logged if "test_perplexity" in r]
    assert [(e.step, pytest.approx(e.value, rel=1e-5)) for e in acc.Scalars("test/perplexity")] == ppls


def test_report_to_names_a_missing_or_unknown_tracker(tiny_cfg):
    with pytest.raises(PoemctlError, match="unknown tracker 'tensorbord'"):
        train(replace(tiny_cfg, train=replace(tiny_cfg.train, report_to=("tensorbord",))))
    missing = next(t for t in ("wandb", "swanlab", "aim", "dvclive", "clearml") if not importlib.util.find_spec(t))
    with pytest.raises(PoemctlError, match=f"--report-to {missing}: its package is not installed"):
        train(replace(tiny_cfg, train=replace(tiny_cfg.train, report_to=(missing,))))
