"""Several torch optimizers over disjoint parameters, stepped as one (Muon's matrices beside AdamW's rest).

A learning-rate schedule, Accelerate and the training state see one optimizer: its param_groups are the
parts' own group dicts, in order (so a schedule's lr reaches them), and its state_dict numbers the parameters
across the parts as one optimizer would, so a state file has the same form whatever the optimizer.
"""

from __future__ import annotations

from collections import ChainMap

import torch


class Composite(torch.optim.Optimizer):
    """Optimizers over disjoint parameters as one torch.optim.Optimizer."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        # Not Optimizer.__init__: the parts own the parameters, their groups and their state.
        self.optimizers = list(optimizers)
        self.defaults = {}
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def state(self):  # parameter → its state, from whichever part holds it
        return ChainMap(*(opt.state for opt in self.optimizers))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for opt in self.optimizers:
            part = opt.state_dict()
            state.update({idx + offset: entries for idx, entries in part["state"].items()})
            groups += [{**g, "params": [i + offset for i in g["params"]]} for g in part["param_groups"]]
            offset += sum(len(g["params"]) for g in opt.param_groups)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups, state = state_dict["param_groups"], state_dict["state"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the state has {len(groups)} parameter groups, this optimizer {len(self.param_groups)}")
        offset, first = 0, 0
        for opt in self.optimizers:
            n = sum(len(g["params"]) for g in opt.param_groups)
            mine = groups[first : first + len(opt.param_groups)]
            opt.load_state_dict(
                {
                    "state": {int(i) - offset: s for i, s in state.items() if offset <= int(i) < offset + n},
                    "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in mine],
                }
            )
            offset, first = offset + n, first + len(opt.param_groups)
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]

    def __repr__(self) -> str:
        return f"Composite({', '.join(type(o).__name__ for o in self.optimizers)})"
