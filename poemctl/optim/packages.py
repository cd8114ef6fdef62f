"""Optimizers from well-kept packages, never written here: Muon (torch.optim) with AdamW beside it,
schedule-free AdamW (`schedulefree`), Lion (`lion-pytorch`), and two bridges that take any torch.optim class
(`torch:NAdam`) or any optimizer of `pytorch-optimizer` (`pytorch-optimizer:ranger`) by name.
"""

from __future__ import annotations

import difflib
import inspect

import torch

from poemctl.config import OptimConfig
from poemctl.errors import PoemctlError
from poemctl.optim.composite import Composite


def _extra(cfg: OptimConfig) -> dict:
    return dict(cfg.extra)


def _needs(package: str, what: str):
    try:
        return __import__(package)
    except ImportError:
        raise PoemctlError(f"{what} needs the {package} package: pip install 'poemctl[optimizers]'") from None


def muon(named_params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Muon on the LSTM's input and recurrent matrices, AdamW on embeddings, biases and the output layer.

    Muon orthogonalises each 2-D hidden-layer update (Newton–Schulz); its authors keep it off embeddings,
    output layers and vectors. adjust_lr_fn="match_rms_adamw" scales its updates to AdamW's size, so one
    --lr serves both (Moonshot AI's recipe); --momentum is Muon's (0.95 is its default, give it as
    --momentum 0.95), --weight-decay both's.
    """
    matrices, rest = [], []
    for name, p in named_params:
        (matrices if p.ndim == 2 and name.startswith("lstm.") else rest).append(p)
    extra = _extra(cfg)
    return Composite(
        [
            torch.optim.Muon(
                matrices,
                lr=cfg.lr,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                adjust_lr_fn=extra.pop("adjust_lr_fn", "match_rms_adamw"),
                **extra,
            ),
            torch.optim.AdamW(rest, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay),
        ]
    )


muon.named = True  # it is given (name, parameter) pairs: it needs to know which matrix is which


def schedulefree_adamw(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Schedule-free AdamW (Defazio et al., 2024): no decay schedule needed; evaluates at its averaged weights."""
    sf = _needs("schedulefree", "schedulefree-adamw")
    return sf.AdamWScheduleFree(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **_extra(cfg)
    )


def lion(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Lion (Chen et al., 2023): the sign of an interpolated momentum; use a 3–10× smaller --lr than Adam."""
    _needs("lion_pytorch", "lion")
    from lion_pytorch import Lion

    return Lion(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **_extra(cfg))


class Bridge:
    """A family of optimizers by name: `PREFIX:NAME`; resolve(NAME) is the factory."""

    def __init__(self, prefix: str, description: str, classes, package: str | None = None):
        self.prefix, self.description, self._classes, self.package = prefix, description, classes, package

    def resolve(self, name: str):
        """The factory (params, cfg) → optimizer of class name; an unknown name is a one-line error."""
        classes = self._classes()
        if name not in classes:
            close = difflib.get_close_matches(name, list(classes), n=1, cutoff=0.5)
            hint = f"; did you mean '{self.prefix}:{close[0]}'?" if close else ""
            raise PoemctlError(f"unknown optimizer '{self.prefix}:{name}'{hint} ({len(classes)} available)")
        cls = classes[name]

        def factory(params, cfg: OptimConfig) -> torch.optim.Optimizer:
            # lr always; weight decay, betas and eps where the class takes them; anything else as --opt-arg.
            accepted = inspect.signature(cls.__init__).parameters
            given = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "betas": cfg.betas, "eps": cfg.eps}
            kwargs = {k: v for k, v in given.items() if k in accepted and (k == "lr" or v != _DEFAULTS[k])}
            return cls(params, **kwargs, **_extra(cfg))

        factory.__doc__ = f"{cls.__module__}.{cls.__name__}"
        return factory


_DEFAULTS = {f: getattr(OptimConfig(), f) for f in ("weight_decay", "betas", "eps")}  # left to the class


def _torch_classes() -> dict:
    return {
        name: obj
        for name, obj in vars(torch.optim).items()
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer
    }


def _pytorch_optimizer_classes() -> dict:
    po = _needs("pytorch_optimizer", "pytorch-optimizer:NAME")
    return {name: po.load_optimizer(name) for name in po.get_supported_optimizers()}


torch_bridge = Bridge("torch", "any torch.optim optimizer by class name: torch:NAdam, torch:Adamax …", _torch_classes)
pytorch_optimizer_bridge = Bridge(
    "pytorch-optimizer",
    "any optimizer of the pytorch-optimizer package by name: pytorch-optimizer:ranger …",
    _pytorch_optimizer_classes,
)
