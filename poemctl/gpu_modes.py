"""torch-lstm's GPU fast paths, `--cuda-graphs` and `--fused-steps`: checked in one place, turned on in one.

A config (TrainConfig or BenchConfig) asks for a mode with a field of the same name; a model has the mode
when it has the method that turns it on (TorchLSTM.use_cuda_graphs, TorchLSTM.use_fused_steps).
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

from poemctl.errors import PoemctlError


class Mode(NamedTuple):
    flag: str
    method: str  # the model's method that turns it on
    name: str
    library: str | None  # the package it needs


MODES = {
    "cuda_graphs": Mode("--cuda-graphs", "use_cuda_graphs", "CUDA-graph mode", None),
    "fused_steps": Mode("--fused-steps", "use_fused_steps", "fused-step mode", "triton"),
}


def check(cfg, on_gpu: bool, gpu: str, models: dict | None = None) -> None:
    """Fail in one line where cfg asks for a mode that cannot run: not on a GPU (gpu says what is needed), a
    model without it (models: name → class), or its library missing."""
    for field, mode in MODES.items():
        if not getattr(cfg, field):
            continue
        if not on_gpu:
            raise PoemctlError(f"{mode.flag} needs {gpu}")
        for name, model_cls in (models or {}).items():
            if not hasattr(model_cls, mode.method):
                raise PoemctlError(f"{mode.flag}: {name} has no {mode.name} (torch-lstm has)")
        if mode.library and importlib.util.find_spec(mode.library) is None:
            raise PoemctlError(f"{mode.flag} needs {mode.library.capitalize()}: pip install {mode.library}")


def use(model, cfg) -> None:
    """Turn on the modes that cfg asks for, where the model has them."""
    for field, mode in MODES.items():
        if getattr(cfg, field) and hasattr(model, mode.method):
            getattr(model, mode.method)()
