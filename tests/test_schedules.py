"""schedules.py: warmup, cosine, linear and plateau learning rates, and their state."""

import json

import pytest
import torch

from poemctl.config import TrainConfig
from poemctl.errors import PoemctlError
from poemctl.metrics import read_metrics
from poemctl.schedules import Schedule
from poemctl.train import train


def _lrs(cfg: TrainConfig, total: int, evaluations=None) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = Schedule(optimizer, cfg, total)
    lrs = []
    for step in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
        if evaluations and step in evaluations:
            schedule.evaluated(evaluations[step])
    return lrs


def test_warmup_then_cosine_to_the_floor():
    lrs = _lrs(TrainConfig(schedule="cosine", warmup_steps=4, min_lr_ratio=0.1), 14)
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4] == pytest.approx(0.1) and lrs[9] == pytest.approx(0.01 + 0.09 * 0.5)  # halfway down
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False)) and lrs[-1] > 0.01


def test_linear_and_constant():
    assert _lrs(TrainConfig(schedule="linear"), 4) == pytest.approx([0.1, 0.075, 0.05, 0.025])
    assert _lrs(TrainConfig(), 3) == pytest.approx([0.1, 0.1, 0.1])


def test_plateau_cuts_after_an_evaluation_without_a_new_best_and_warmup_does_not_undo_it():
    cfg = TrainConfig(schedule="plateau", warmup_steps=2, plateau_factor=0.5, plateau_patience=0)
    lrs = _lrs(cfg, 8, evaluations={2: 100.0, 3: 90.0, 4: 95.0, 6: 96.0})
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025])


def test_state_is_json_and_restores_the_schedule():
    cfg = TrainConfig(schedule="plateau", warmup_steps=3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    s = Schedule(opt, cfg, 10)
    for _ in range(4):
        opt.step()
        s.step()
    s.evaluated(50.0)
    s.evaluated(60.0)
    state = json.loads(json.dumps(s.state_dict()))
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    s2 = Schedule(opt2, cfg, 10)  # as train.py resumes: the schedule, then the optimizer's and its own state
    opt2.load_state_dict(opt.state_dict())
    s2.load_state_dict(state)
    s.evaluated(70.0)
    s2.evaluated(70.0)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_training_logs_the_scheduled_learning_rate(tiny_cfg):
    from dataclasses import replace

    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, max_steps=6, schedule="linear", warmup_steps=2))
    result = train(cfg)
    lrs = [r["lr"] for r in read_metrics(result.run_dir) if "lr" in r]
    lr = cfg.optim.lr
    assert lrs == pytest.approx([lr / 2, lr, lr, lr * 3 / 4, lr / 2, lr / 4])


@pytest.mark.parametrize(
    "field, value, text",
    [
        ("schedule", "step", "--schedule must be one of constant, cosine, linear, plateau"),
        ("warmup_steps", -1, "--warmup-steps"),
        ("plateau_factor", 1.0, "--plateau-factor"),
    ],
)
def test_bad_schedule_settings(field, value, text):
    with pytest.raises(PoemctlError, match=text):
        TrainConfig(**{field: value})
