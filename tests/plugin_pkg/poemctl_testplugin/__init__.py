"""A third-party poemctl plugin: sign-SGD and a model built on poemctl's contract."""

import torch

from poemctl.models.torch_lstm import TorchLSTM


class SignSGD(torch.optim.Optimizer):
    """sign-SGD: W ← W − η sign(g)."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        """One update."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-group["lr"])


def sign_sgd(params, cfg):
    """sign-SGD from a third-party package: W ← W − η sign(g)."""
    return SignSGD(params, lr=cfg.lr)


class EchoLSTM(TorchLSTM):
    """A third-party model: torch-lstm under another name."""

    description = "a third-party test model (torch-lstm under another name)"
