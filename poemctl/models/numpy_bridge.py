"""How a NumPy model with a hand-written backward joins the PyTorch training loop.

A NumPy model gives three functions on arrays (float32, or float64 after `.double()`):

    loss_forward(params, tokens, targets, ignore_index, keep) → per-row NLL (B,), scored counts (B,), cache
    loss_backward(dnll, params, cache)                  → the gradients of params, same order and shapes
    logits_forward(params, tokens, h0, c0)              → logits (B, T, V), h, C

params are the canonical tensors of models/base.py as arrays: embedding, W_x, W_h, b, W_y, b_y; keep is
None, or (B, T, H) factors for h_t before the output layer (output dropout). Embedding dropout needs
nothing of them: the embedding they get has its dropped rows zeroed already, and autograd takes the
gradient through the mask. A
torch.autograd.Function runs the first two, so optimizers, clipping, checkpoints and multi-process
training are the same as for every other model.
"""

from __future__ import annotations

import numpy as np
import torch

from poemctl.models.base import ModelOutput, PoemModel, State


def _tensor(a: np.ndarray) -> torch.Tensor:
    """a as a tensor that owns its memory: the tensor a is a whole view of, else a copy.

    Why not torch.from_numpy: its tensor holds the array, and freeing it takes the GIL. gloo frees the
    tensors it gathers on its own threads, and one that does so while Python shuts down aborts the process.
    """
    if isinstance(a.base, torch.Tensor) and a.base.data_ptr() == a.ctypes.data and a.base.shape == a.shape:
        return a.base
    return torch.from_numpy(a).clone()


class _NumpyLoss(torch.autograd.Function):
    """The bridge: forward runs the model's loss_forward and keeps its cache, backward its loss_backward."""

    @staticmethod
    def forward(ctx, model_cls, tokens, targets, ignore_index, keep, *params):
        arrays = [p.detach().numpy() for p in params]
        keep = None if keep is None else keep.numpy()
        nll, count, cache = model_cls.loss_forward(arrays, tokens.numpy(), targets.numpy(), ignore_index, keep)
        ctx.model_cls, ctx.arrays, ctx.cache = model_cls, arrays, cache
        count = _tensor(count)
        ctx.mark_non_differentiable(count)
        return _tensor(nll), count

    @staticmethod
    def backward(ctx, dnll, _dcount):
        grads = ctx.model_cls.loss_backward(dnll.detach().numpy(), ctx.arrays, ctx.cache)
        ctx.cache = None  # the cache is large: free it as soon as it is used
        return (None, None, None, None, None, *(_tensor(g) for g in grads))


class NumpyModel(PoemModel):
    """Base of the NumPy models: subclasses set loss_forward, loss_backward and logits_forward."""

    cpu_only = True
    loss_forward = loss_backward = logits_forward = None

    def _params(self) -> list[torch.Tensor]:
        o = self.output
        return [self.embedding_weight(), self.lstm.weight_ih, self.lstm.weight_hh, self.lstm.bias, o.weight, o.bias]

    def forward(
        self,
        tokens: torch.Tensor,
        state: State | None = None,
        targets: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> ModelOutput:
        """Same contract as PoemModel.forward, computed in NumPy."""
        if targets is None:
            if self.training and (self.cfg.embedding_dropout or self.cfg.output_dropout):
                raise ValueError(f"{type(self).__name__} computes logits with dropout off only (call .eval())")
            arrays = [p.detach().numpy() for p in self._params()]
            h0, c0 = state if state is not None else self.zero_state(tokens.shape[0])
            logits, h, c = type(self).logits_forward(arrays, tokens.numpy(), h0.numpy(), c0.numpy())
            return ModelOutput(_tensor(logits), (_tensor(h), _tensor(c)), None, None)
        if state is not None:
            raise ValueError(f"{type(self).__name__} computes a loss from the zero state only")
        params = self._params()  # embedding_weight() first, then output_keep(): the order every model draws in
        keep = self.output_keep(tokens)
        nll, count = _NumpyLoss.apply(type(self), tokens, targets, ignore_index, keep, *params)
        return ModelOutput(None, None, nll, count)
