"""optim/packages.py and composite.py: optimizers from packages, the bridges, Muon beside AdamW."""

import pytest
import torch

from poemctl.config import ModelConfig, OptimConfig
from poemctl.errors import PoemctlError
from poemctl.models.torch_lstm import TorchLSTM
from poemctl.optim.composite import Composite
from poemctl.registry import OPTIMIZERS
from poemctl.train import _parameters

NEW = ["muon", "schedulefree-adamw", "lion", "torch:NAdam", "pytorch-optimizer:lamb"]


def _model(**kw):
    torch.manual_seed(0)
    return TorchLSTM(ModelConfig(vocab_size=30, embedding=kw.pop("embedding", 6), hidden=8, **kw))


def _steps(model, optimizer, n=5):
    tokens, targets = torch.randint(1, 30, (4, 7)), torch.randint(1, 30, (4, 7))
    losses = []
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()
    for _ in range(n):
        loss = model(tokens, targets=targets, ignore_index=0).nll.sum() / 28
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", NEW)
def test_each_new_optimizer_learns(name):
    factory = OPTIMIZERS.get(name)
    model = _model()
    optimizer = factory(_parameters(factory, model.named_parameters()), OptimConfig(lr=0.01))
    losses = _steps(model, optimizer, 20)
    assert losses[-1] < losses[0] - 0.1, losses


def test_muon_takes_the_lstm_matrices_and_adamw_the_rest():
    model = _model(embedding=8, tie_weights=True)
    factory = OPTIMIZERS.get("muon")
    optimizer = factory(_parameters(factory, model.named_parameters()), OptimConfig(lr=0.01))
    muon, adamw = optimizer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert {id(p) for g in muon.param_groups for p in g["params"]} == {
        id(model.lstm.weight_ih),
        id(model.lstm.weight_hh),
    }
    rest = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert rest == {id(model.embedding.weight), id(model.lstm.bias), id(model.output.bias)}  # tied: one matrix


def test_a_schedule_reaches_every_part_of_a_composite():
    model = _model()
    factory = OPTIMIZERS.get("muon")
    optimizer = factory(_parameters(factory, model.named_parameters()), OptimConfig(lr=0.01))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    _steps(model, optimizer, 1)
    schedule.step()
    assert [g["lr"] for o in optimizer.optimizers for g in o.param_groups] == [0.005, 0.005]


def test_a_composites_state_round_trips_to_the_same_next_step():
    factory = OPTIMIZERS.get("muon")
    runs = []
    for reload in (False, True):
        model = _model()
        optimizer = factory(_parameters(factory, model.named_parameters()), OptimConfig(lr=0.01))
        _steps(model, optimizer, 3)
        if reload:
            saved = optimizer.state_dict()
            assert sorted(saved["state"]) == list(range(6))  # numbered as one optimizer would
            optimizer = factory(_parameters(factory, model.named_parameters()), OptimConfig(lr=0.01))
            optimizer.load_state_dict(saved)
        _steps(model, optimizer, 2)
        runs.append(model.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=0, atol=0)


def test_a_composite_refuses_a_state_of_another_shape():
    optimizer = Composite([torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)])
    with pytest.raises(ValueError, match="the state has 2 parameter groups, this optimizer 1"):
        optimizer.load_state_dict({"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}]})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torch:Nadam", "unknown optimizer 'torch:Nadam'; did you mean 'torch:NAdam'?"),
        ("pytorch-optimizer:lamm", "unknown optimizer 'pytorch-optimizer:lamm'; did you mean 'pytorch-optimizer:lamb'"),
        ("adam:fast", "optimizer 'adam' is not a family: give it without ':fast'"),
    ],
)
def test_bad_family_names_are_one_line(name, message):
    with pytest.raises(PoemctlError, match=message.replace("(", r"\(").replace("?", r"\?")):
        OPTIMIZERS.get(name)


def test_a_bridge_passes_only_what_the_class_takes():
    factory = OPTIMIZERS.get("torch:SGD")
    p = torch.nn.Parameter(torch.zeros(2))
    sgd = factory([p], OptimConfig(lr=0.1, betas=(0.8, 0.9)))  # SGD has no betas: not passed
    assert sgd.param_groups[0]["lr"] == 0.1 and sgd.param_groups[0]["momentum"] == 0  # not our --momentum
    adam = OPTIMIZERS.get("torch:Adamax")([p], OptimConfig(lr=0.1, betas=(0.8, 0.9)))
    assert adam.param_groups[0]["betas"] == (0.8, 0.9)


def test_schedule_free_evaluates_and_saves_its_averaged_weights(tiny_cfg):
    from dataclasses import replace

    from safetensors.torch import load_file

    from poemctl import checkpoint
    from poemctl.scoring import score_checkpoint
    from poemctl.train import train

    result = train(replace(tiny_cfg, optim=OptimConfig(name="schedulefree-adamw", lr=0.01)))
    saved = load_file(result.run_dir / "last.safetensors")
    training = {
        k[len("model.") :]: v for k, v in load_file(result.run_dir / "state.safetensors").items() if "model." in k
    }
    assert any(not torch.equal(saved[k], training[k]) for k in saved)  # the average, not the training point
    model, meta = checkpoint.load(result.run_dir / "last.safetensors")
    assert score_checkpoint(model, meta).perplexity == pytest.approx(result.last_perplexity, rel=1e-5)
