"""The training state, for resuming: model, optimizer, RNG and data position in one safetensors file.

Written atomically (temporary name, then rename), so a kill at any moment leaves the previous state whole.
No pickle: tensors go into safetensors, everything else into its JSON metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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


def save_state(
    run_dir: Path, model_state: dict, optimizer: torch.optim.Optimizer, position: Position, schedule: dict
) -> None:
    """Write run_dir/state.safetensors atomically; schedule is the learning-rate schedule's state (JSON-ready)."""
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
    }
    atomic_write(run_dir / STATE_FILE, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_state(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Position, dict]:
    """Restore model, optimizer and RNG from run_dir/state.safetensors; the position and the schedule's state
    (empty from states written before schedules existed: the constant schedule's)."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise PoemctlError(f"{run_dir} holds no training state ({STATE_FILE}) to resume from")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        position = Position(**json.loads(meta["position"]))
        groups = json.loads(meta["param_groups"])
        scalars = json.loads(meta["optim_scalars"])
        schedule = json.loads(meta.get("schedule", "{}"))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise PoemctlError(f"{path} is not a readable poemctl training state ({e})") from None
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in scalars.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    return position, schedule
