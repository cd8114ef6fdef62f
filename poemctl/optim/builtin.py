"""The course's four optimizers and two modern ones, all from torch.optim."""

from __future__ import annotations

import torch

from poemctl.config import OptimConfig


def _extra(cfg: OptimConfig) -> dict:
    return dict(cfg.extra)


def sgd(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Plain SGD: W ← W − η g."""
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_extra(cfg))


def momentum(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with momentum: v ← μ v + η g; W ← W − v (--momentum, default 0.9)."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **_extra(cfg))


def adagrad(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdaGrad: s ← s + g²; W ← W − η g / (√s + ε)."""
    return torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, **_extra(cfg))


def adam(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam: momentum and AdaGrad-style scaling, bias-corrected (the course's winner)."""
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **_extra(cfg)
    )


def adamw(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW: Adam with decoupled weight decay (--weight-decay)."""
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **_extra(cfg)
    )


def rmsprop(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """RMSprop: a running mean of g² instead of AdaGrad's sum."""
    return torch.optim.RMSprop(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, **_extra(cfg))
