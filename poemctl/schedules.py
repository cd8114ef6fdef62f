"""Learning-rate schedules from torch.optim.lr_scheduler: a linear warmup, then constant, cosine or linear
decay over the run's steps, or a cut by a factor whenever test perplexity stops improving (plateau).

`Schedule.step()` is called after every optimizer step, `Schedule.evaluated(ppl)` after every evaluation;
their state goes into the training state (JSON), so a resumed run keeps its schedule.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from poemctl.config import TrainConfig


class Schedule:
    """The learning rate of a run: a factor of the optimizer's lr for each step, and the plateau cuts."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> None:
        self.cfg, self.total = cfg, max(total_steps, 1)
        self.per_step = LambdaLR(optimizer, self.factor)
        self.plateau = None
        if cfg.schedule == "plateau":
            self.plateau = ReduceLROnPlateau(optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience)

    def factor(self, step: int) -> float:
        """The factor of the learning rate for optimizer step step + 1 (LambdaLR counts from 0)."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule in ("constant", "plateau"):
            return 1.0
        done = (step - cfg.warmup_steps) / max(self.total - cfg.warmup_steps, 1)  # 0 → 1 over the decay
        shape = 0.5 * (1 + math.cos(math.pi * min(done, 1.0))) if cfg.schedule == "cosine" else 1 - min(done, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    def step(self) -> None:
        """After an optimizer step. With plateau, the per-step factor stops after warmup: from then on the
        learning rate is the plateau's to cut, and LambdaLR would set it back."""
        if self.plateau is None or self.per_step.last_epoch < self.cfg.warmup_steps:
            self.per_step.step()

    def evaluated(self, perplexity: float) -> None:
        """After an evaluation: plateau cuts the learning rate if perplexity stopped improving."""
        if self.plateau is not None and math.isfinite(perplexity):
            self.plateau.step(perplexity)

    def state_dict(self) -> dict:
        """JSON-ready state of both schedulers."""
        return {
            "per_step": {k: v for k, v in self.per_step.state_dict().items() if k != "lr_lambdas"},
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict."""
        self.per_step.load_state_dict({**state["per_step"], "lr_lambdas": [None] * len(self.per_step.lr_lambdas)})
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
