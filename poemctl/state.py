"""The training state, for resuming: model, optimizer, RNG and data position in one safetensors file.

Written atomically (temporary name, then rename), so a kill at any moment leaves the previous state whole.
No pickle: tensors go into safetensors, everything else into its JSON metadata.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from poemctl.checkpoint import unshared
from poemctl.errors import PoemctlError
from poemctl.files import atomic_write

STATE_FILE = "state.safetensors"


@dataclass(frozen=True)
class Position:
    """Where training stands: optimizer steps done, the epoch, batches of it consumed, best/last perplexity."""

    step: int
    epoch: int
    batches_done: int  # batches of `epoch` already trained on
    best: float
    last: float
    evaluated_at: int
    wall_time: float
    train_time: float = 0.0  # seconds spent in training steps, evaluations and saves excluded

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = int if f.type in (int, "int") else float
            if isinstance(value, bool) or not isinstance(value, (int,) if kind is int else (int, float)):
                raise ValueError(f"position.{f.name} = {value!r} is not {'an integer' if kind is int else 'a number'}")
        if min(self.step, self.batches_done) < 0 or self.epoch < 1:
            raise ValueError(f"position: step {self.step}, epoch {self.epoch}, batches {self.batches_done}")


def save_state(
    run_dir: Path,
    model_state: dict,
    optimizer: torch.optim.Optimizer,
    position: Position,
    schedule: dict,
    corpus_hash: str = "",
) -> None:
    """Write run_dir/state.safetensors atomically; schedule is the learning-rate schedule's state (JSON-ready),
    corpus_hash the hash of the corpus the run trains on (resume checks it)."""
    tensors = unshared({f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()})
    opt = optimizer.state_dict()
    scalars = {}
    for idx, entries in opt["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "position": json.dumps(asdict(position)),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "schedule": json.dumps(schedule),
        "corpus_hash": corpus_hash,
    }
    atomic_write(run_dir / STATE_FILE, lambda tmp: save_file(tensors, tmp, metadata=metadata))


@dataclass(frozen=True)
class SavedState:
    """A training state as read from its file, checked; restore() puts it into a model and optimizer."""

    path: Path
    position: Position
    schedule: dict  # empty from states written before schedules existed: the constant schedule's
    corpus_hash: str  # "" from states written before it was recorded
    weights: dict
    optimizer: dict
    rng: torch.Tensor

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Weights, optimizer state and RNG back in place; a state of another shape is a one-line error."""
        try:
            model.load_state_dict(self.weights)
            optimizer.load_state_dict(self.optimizer)
            torch.set_rng_state(self.rng)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
            raise PoemctlError(f"{self.path} does not fit the run's configuration: {first}") from None


def read_state(run_dir: Path) -> SavedState:
    """run_dir/state.safetensors, read and checked: anything that is not what save_state wrote is a one-line
    error naming the file and what is wrong."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise PoemctlError(f"{run_dir} holds no training state ({STATE_FILE}) to resume from")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as e:
        raise PoemctlError(f"{path} is not a readable poemctl training state ({e})") from None
    try:
        position = Position(**_table(json.loads(meta["position"]), "position"))
        groups = json.loads(meta["param_groups"])
        scalars = _table(json.loads(meta["optim_scalars"]), "optim_scalars")
        schedule = _table(json.loads(meta.get("schedule", "{}")), "schedule")
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for key, value in scalars.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        return SavedState(
            path=path,
            position=position,
            schedule=schedule,
            corpus_hash=_hex(meta.get("corpus_hash", "")),
            weights={k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")},
            optimizer={"state": state, "param_groups": groups},
            rng=tensors["rng.torch"],
        )
    except KeyError as e:
        raise PoemctlError(f"{path} is not a poemctl training state (no {e})") from None
    except (ValueError, TypeError) as e:
        raise PoemctlError(f"{path} is not a poemctl training state ({e})") from None


def _hex(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{0,128}", value):
        raise ValueError("corpus_hash is not a hexadecimal hash")
    return value


def _table(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not a table (got {type(value).__name__})")
    return value
