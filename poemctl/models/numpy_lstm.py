"""numpy-lstm: SPEC.md's LSTM in NumPy with hand-written backprop through time, batched.

The NumPy code works on whole batches with one matrix product per time step for all four gates, and
the input projection of every step in one product. `loss_forward` returns a cache and `loss_backward`
turns it into gradients (Karpathy's layout); `NumpyLSTM` joins the shared training loop through a
torch.autograd.Function, so optimizers, clipping, checkpoints and multi-process training are the same.
Arrays inside are time-major: (T, B, …), so each step's slice is contiguous.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from poemctl.models.base import ModelOutput, PoemModel, State


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) written through tanh: no overflow for large |x|."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class LSTMCache(NamedTuple):
    """What the backward pass needs from lstm_forward."""

    x: np.ndarray  # (T, B, E) inputs
    acts: np.ndarray  # (T, B, 4H) gate activations i, f, g, o
    cs: np.ndarray  # (T+1, B, H) cell states C_0 … C_T
    tanh_cs: np.ndarray  # (T, B, H) tanh(C_t)
    hs: np.ndarray  # (T+1, B, H) hidden states h_0 … h_T
    w_ih: np.ndarray  # (4H, E)
    w_hh: np.ndarray  # (4H, H)


def lstm_forward(x, w_ih, w_hh, b, h0, c0) -> tuple[np.ndarray, LSTMCache]:
    """x (T, B, E) → hidden states (T, B, H) and the cache for lstm_backward."""
    T, B, E = x.shape
    H = w_hh.shape[1]
    xw = (x.reshape(T * B, E) @ w_ih.T + b).reshape(T, B, 4 * H)  # every step's input projection at once
    acts = np.empty((T, B, 4 * H), dtype=x.dtype)
    cs = np.empty((T + 1, B, H), dtype=x.dtype)
    hs = np.empty((T + 1, B, H), dtype=x.dtype)
    tanh_cs = np.empty((T, B, H), dtype=x.dtype)
    cs[0], hs[0] = c0, h0
    w_hh_t = np.ascontiguousarray(w_hh.T)  # (H, 4H)
    for t in range(T):
        a = acts[t]
        np.matmul(hs[t], w_hh_t, out=a)
        a += xw[t]
        a[:, : 2 * H] = sigmoid(a[:, : 2 * H])  # i, f
        a[:, 2 * H : 3 * H] = np.tanh(a[:, 2 * H : 3 * H])  # g = c̃
        a[:, 3 * H :] = sigmoid(a[:, 3 * H :])  # o
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        np.multiply(f, cs[t], out=cs[t + 1])
        cs[t + 1] += i * g  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
        np.tanh(cs[t + 1], out=tanh_cs[t])
        np.multiply(o, tanh_cs[t], out=hs[t + 1])  # h_t = o ⊙ tanh(C_t)
    return hs[1:], LSTMCache(x, acts, cs, tanh_cs, hs, w_ih, w_hh)


def lstm_backward(dhs: np.ndarray, cache: LSTMCache) -> tuple[np.ndarray, ...]:
    """Full BPTT (through W_*h into h_{t−1} and through f into C_{t−1}): dhs (T, B, H) → dx, dW_ih, dW_hh, db."""
    x, acts, cs, tanh_cs, hs, w_ih, w_hh = cache
    T, B, H = dhs.shape
    dpre = np.empty_like(acts)  # (T, B, 4H) pre-activation deltas
    dh_next = np.zeros((B, H), dtype=dhs.dtype)  # recurrent part from step t+1
    dc_next = np.zeros((B, H), dtype=dhs.dtype)
    for t in reversed(range(T)):
        a = acts[t]
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        dh = dhs[t] + dh_next
        tc = tanh_cs[t]
        dc = dh * o * (1.0 - tc * tc) + dc_next  # δC_t
        d = dpre[t]
        d[:, :H] = dc * g * i * (1.0 - i)  # δi_pre
        d[:, H : 2 * H] = dc * cs[t] * f * (1.0 - f)  # δf_pre, cs[t] is C_{t−1}
        d[:, 2 * H : 3 * H] = dc * i * (1.0 - g * g)  # δc̃_pre
        d[:, 3 * H :] = dh * tc * o * (1.0 - o)  # δo_pre
        dh_next = d @ w_hh  # Σ_* W_*hᵀ δ*_pre
        dc_next = dc * f
    flat = dpre.reshape(T * B, 4 * H)
    dw_hh = flat.T @ hs[:-1].reshape(T * B, H)
    dw_ih = flat.T @ x.reshape(T * B, -1)
    db = flat.sum(0)
    dx = (flat @ w_ih).reshape(x.shape)
    return dx, dw_ih, dw_hh, db


class LossCache(NamedTuple):
    """What loss_backward needs from loss_forward."""

    tokens_t: np.ndarray  # (T, B) inputs, time-major
    rows: np.ndarray  # (N,) batch row of each scored target
    mask: np.ndarray  # (T, B) scored targets
    sel: np.ndarray  # (N, H+1) hidden states at scored targets, and a column of ones
    probs: np.ndarray  # (N, V) softmax
    target: np.ndarray  # (N,) target ids
    lstm: LSTMCache


def _zeros_state(B: int, H: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((B, H), dtype=dtype), np.zeros((B, H), dtype=dtype)


def loss_forward(params, tokens, targets, ignore_index: int) -> tuple[np.ndarray, np.ndarray, LossCache]:
    """(B, T) tokens and targets → per-row summed NLL (B,), scored counts (B,), cache."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    tokens_t, targets_t = tokens.T, targets.T
    B, H = tokens.shape[0], w_hh.shape[1]
    hs, lstm = lstm_forward(emb[tokens_t], w_ih, w_hh, b, *_zeros_state(B, H, emb.dtype))
    mask = targets_t != ignore_index
    # The output layer runs on scored positions only; a column of ones carries the bias into the product.
    sel = np.empty((int(mask.sum()), H + 1), dtype=emb.dtype)  # (N, H+1)
    sel[:, :H] = hs[mask]
    sel[:, H] = 1.0
    w_aug = np.concatenate([w_y.T, b_y[None]])  # (H+1, V)
    probs = _softmax(sel, w_aug)  # (N, V)
    target = targets_t[mask]
    rows = np.nonzero(mask)[1]
    nll = -np.log(probs[np.arange(len(target)), target])
    per_row = np.bincount(rows, weights=nll, minlength=B).astype(emb.dtype)
    return per_row, mask.sum(0), LossCache(tokens_t, rows, mask, sel, probs, target, lstm)


def _softmax(sel: np.ndarray, w_aug: np.ndarray) -> np.ndarray:
    """softmax(sel @ w_aug) by rows, in place; without the max-subtraction pass unless exp overflows."""
    probs = sel @ w_aug
    with np.errstate(over="ignore"):
        np.exp(probs, out=probs)
    sums = probs.sum(axis=1, keepdims=True)
    if not np.isfinite(sums).all():  # large logits: the stable (slower) way
        probs = sel @ w_aug
        probs -= probs.max(axis=1, keepdims=True)
        np.exp(probs, out=probs)
        sums = probs.sum(axis=1, keepdims=True)
    probs *= 1.0 / sums  # one division per row, not per entry
    return probs


def loss_backward(dnll: np.ndarray, params, cache: LossCache) -> list[np.ndarray]:
    """Upstream gradient of the per-row NLL (B,) → gradients of params, same order and shapes."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    H = w_hh.shape[1]
    dlogits = cache.probs  # reused in place: y − onehot, times each row's upstream gradient
    dlogits[np.arange(len(cache.target)), cache.target] -= 1.0
    up = dnll[cache.rows]
    uniform = len(up) > 0 and bool((up == up[0]).all())  # the usual mean loss: scale the small products
    scale = up[0] if uniform else 1.0
    if not uniform:
        dlogits *= up[:, None]
    dw_aug = dlogits.T @ cache.sel  # (V, H+1): W_y's gradient and, in the last column, b_y's
    dw_y, db_y = dw_aug[:, :H] * scale, dw_aug[:, H] * scale
    dhs = np.zeros(cache.lstm.acts.shape[:2] + (H,), dtype=emb.dtype)
    dhs[cache.mask] = (dlogits @ w_y) * scale  # δh_t = W_yᵀ(y_t − onehot_t)
    dx, dw_ih, dw_hh, db = lstm_backward(dhs, cache.lstm)
    demb = np.zeros_like(emb)
    np.add.at(demb, cache.tokens_t.ravel(), dx.reshape(-1, emb.shape[1]))
    return [demb, dw_ih, dw_hh, db, dw_y, db_y]


def logits_forward(params, tokens, h0, c0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, T) tokens from state (h0, c0) → logits (B, T, V) and the final (h, C); no cache (inference)."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    hs, cache = lstm_forward(emb[tokens.T], w_ih, w_hh, b, h0, c0)
    logits = hs @ w_y.T + b_y  # (T, B, V)
    return logits.transpose(1, 0, 2), cache.hs[-1], cache.cs[-1]


class _NumpyLoss(torch.autograd.Function):
    """The bridge: forward runs NumPy and keeps the cache, backward runs the hand-written BPTT."""

    @staticmethod
    def forward(ctx, tokens, targets, ignore_index, *params):
        arrays = [p.detach().numpy() for p in params]
        nll, count, cache = loss_forward(arrays, tokens.numpy(), targets.numpy(), ignore_index)
        ctx.arrays, ctx.cache = arrays, cache
        count = torch.from_numpy(count)
        ctx.mark_non_differentiable(count)
        return torch.from_numpy(nll), count

    @staticmethod
    def backward(ctx, dnll, _dcount):
        grads = loss_backward(dnll.detach().numpy(), ctx.arrays, ctx.cache)
        ctx.cache = None  # the cache is large: free it as soon as it is used
        return (None, None, None, *(torch.from_numpy(g) for g in grads))


class NumpyLSTM(PoemModel):
    """SPEC.md's LSTM in NumPy with hand-written BPTT; CPU only, float32 (float64 after .double())."""

    description = "SPEC.md's LSTM in NumPy with hand-written backprop through time (CPU)"
    cpu_only = True

    def _params(self) -> list[torch.Tensor]:
        o = self.output
        return [self.embedding.weight, self.lstm.weight_ih, self.lstm.weight_hh, self.lstm.bias, o.weight, o.bias]

    def forward(
        self,
        tokens: torch.Tensor,
        state: State | None = None,
        targets: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> ModelOutput:
        """Same contract as PoemModel.forward, computed in NumPy."""
        if targets is None:
            arrays = [p.detach().numpy() for p in self._params()]
            h0, c0 = state if state is not None else self.zero_state(tokens.shape[0])
            logits, h, c = logits_forward(arrays, tokens.numpy(), h0.numpy(), c0.numpy())
            return ModelOutput(torch.from_numpy(logits), (torch.from_numpy(h), torch.from_numpy(c)), None, None)
        if state is not None:
            raise ValueError("numpy-lstm computes a loss from the zero state only")
        nll, count = _NumpyLoss.apply(tokens, targets, ignore_index, *self._params())
        return ModelOutput(None, None, nll, count)
