"""numpy-lstm: SPEC.md's LSTM in NumPy with hand-written backprop through time, batched.

The NumPy code works on whole batches with one matrix product per time step for all four gates. A
character's input projection W_x x + b depends only on the character, so the forward computes it once per
distinct character of the batch (a table). `loss_forward` returns a cache and `loss_backward` turns it into
gradients (Karpathy's layout); `NumpyLSTM` joins the shared training loop through a torch.autograd.Function,
so optimizers, clipping, checkpoints and multi-process training are the same. Arrays inside are time-major:
(T, B, …), so each step's slice is contiguous.

Threads: inside the model NumPy's BLAS runs single-threaded and the large products, and the output layer's
exp and sums, are shared out in row blocks among the model's own threads (torch's intra-op count). The
recurrence is a chain of small steps on one thread; while it runs, the other threads work through what does
not wait on it (`_Backlog`): the output layer for the steps already done, and in the backward W_y's gradient.
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from poemctl.models.base import ModelOutput, PoemModel, State
from poemctl.models.head import FAST_SUMS


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="numpy-lstm")


def _threads() -> int:
    return max(1, torch.get_num_threads())  # the model's threads: torch's intra-op count


def _map(fn, parts: list) -> None:
    """Run fn on each part on the model's threads; NumPy releases the GIL inside its loops and BLAS."""
    threads = _threads()
    if threads == 1 or len(parts) == 1:
        for part in parts:
            fn(part)
    else:
        list(_pool(threads).map(fn, parts))


def _blocks(n: int, size: int) -> list[slice]:
    """Slices of at most size covering range(n)."""
    size = max(1, size)
    return [slice(k, min(k + size, n)) for k in range(0, n, size)]


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b with the rows of a shared among the model's threads."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    _map(lambda s: np.matmul(a[s], b, out=out[s]), _blocks(len(a), -(-len(a) // _threads())))
    return out


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def _own_threads(fn):
    """Run fn with NumPy's BLAS single-threaded: the model's own threads share out the large products.

    Why: an OpenBLAS worker spins for a while after each product it joined, taking a core from whatever
    runs next (this model's exp threads, or torch's optimizer step) on a machine with few cores. The limit
    is process-wide while fn runs and is lifted after it.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with _blas().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapped


class _Backlog:
    """Tasks that the model's other threads work through while the caller is busy, and the caller too after.

    Use as a context manager: `put` tasks inside the block; on leaving it the caller joins the helpers until
    the backlog is empty, and errors raised in a helper are raised there. NumPy releases the GIL inside its
    products and loops, so a helper on large row blocks barely slows the caller's small steps.
    """

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._helpers = [_pool(_threads()).submit(self._drain) for _ in range(_threads() - 1)]

    def put(self, fn: Callable[[slice], None], part: slice) -> None:
        """Queue fn(part)."""
        self._tasks.put((fn, part))

    def _drain(self) -> None:
        while (task := self._tasks.get()) is not None:
            fn, part = task
            fn(part)

    def __enter__(self) -> _Backlog:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for _ in range(len(self._helpers) + 1):  # one stop mark per thread, after every task
            self._tasks.put(None)
        try:
            if exc_type is None:
                self._drain()
        finally:  # the helpers finish the backlog, even when the caller's share of it failed
            for helper in self._helpers:
                helper.result()


class LSTMCache(NamedTuple):
    """What the backward pass needs from lstm_forward."""

    acts: np.ndarray  # (T, B, 4H) gate activations i, f, g, o
    cs: np.ndarray  # (T+1, B, H) cell states C_0 … C_T
    tanh_cs: np.ndarray  # (T, B, H) tanh(C_t)
    hs: np.ndarray  # (T+1, B, H) hidden states h_0 … h_T
    w_hh: np.ndarray  # (4H, H)


def lstm_forward(table, where, w_hh, h0, c0, on_step=None) -> tuple[np.ndarray, LSTMCache]:
    """table (U, 4H) of W_x x + b per character, where (T, B) → hidden states (T, B, H) and the cache.

    on_step(t, h_t), when given, is called with each step's hidden states (B, H) as soon as they are done.

    σ(z) = (1 + tanh(z/2)) / 2: with the sigmoid gates' pre-activations halved up front, one tanh over a
    step's contiguous (B, 4H) block covers all four gates, and one scale and shift turns i, f, o into σ.
    """
    T, B = where.shape
    H = w_hh.shape[1]
    half = np.full(4 * H, 0.5, dtype=table.dtype)  # per gate column: i, f, o halved, c̃ as it is
    half[2 * H : 3 * H] = 1.0
    shift = np.full(4 * H, 0.5, dtype=table.dtype)
    shift[2 * H : 3 * H] = 0.0
    table = table * half
    w_hh_t = np.ascontiguousarray((w_hh * half[:, None]).T)  # (H, 4H)
    acts = np.empty((T, B, 4 * H), dtype=table.dtype)
    cs = np.empty((T + 1, B, H), dtype=table.dtype)
    hs = np.empty((T + 1, B, H), dtype=table.dtype)
    tanh_cs = np.empty((T, B, H), dtype=table.dtype)
    i_g = np.empty((B, H), dtype=table.dtype)
    cs[0], hs[0] = c0, h0
    for t in range(T):
        a = acts[t]
        np.matmul(hs[t], w_hh_t, out=a)
        a += table[where[t]]
        np.tanh(a, out=a)
        a *= half
        a += shift  # i, f, o = σ(z), c̃ = tanh(z)
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        np.multiply(f, cs[t], out=cs[t + 1])
        np.multiply(i, g, out=i_g)
        cs[t + 1] += i_g  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
        np.tanh(cs[t + 1], out=tanh_cs[t])
        np.multiply(o, tanh_cs[t], out=hs[t + 1])  # h_t = o ⊙ tanh(C_t)
        if on_step is not None:
            on_step(t, hs[t + 1])
    return hs[1:], LSTMCache(acts, cs, tanh_cs, hs, w_hh)


def lstm_backward(dhs: np.ndarray, cache: LSTMCache) -> tuple[np.ndarray, np.ndarray]:
    """Full BPTT (through W_*h into h_{t−1} and through f into C_{t−1}): dhs (T, B, H) → δpre (T, B, 4H), dW_hh."""
    acts, cs, tanh_cs, hs, w_hh = cache
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
    dw_hh = _matmul(dpre.reshape(T * B, 4 * H).T, hs[:-1].reshape(T * B, H))
    return dpre, dw_hh


class LossCache(NamedTuple):
    """What loss_backward needs from loss_forward."""

    tokens_t: np.ndarray  # (T, B) inputs, time-major
    x: np.ndarray  # (T·B, E+1) their embeddings, and a column of ones (for the bias gradient)
    rows: np.ndarray  # (N,) batch row of each scored target
    mask: np.ndarray  # (T, B) scored targets
    sel: np.ndarray  # (N, H+1) hidden states at scored targets, and a column of ones
    exps: np.ndarray  # (N, V) exp of the (shifted) logits, not normalised
    sums: np.ndarray  # (N,) their row sums: the softmax is exps / sums
    target: np.ndarray  # (N,) target ids
    lstm: LSTMCache


def _with_ones(a: np.ndarray) -> np.ndarray:
    """(n, k) → (n, k+1) with a last column of ones: the bias rides along in the products with it."""
    out = np.empty((len(a), a.shape[1] + 1), dtype=a.dtype)
    out[:, :-1] = a
    out[:, -1] = 1.0
    return out


def _zeros_state(B: int, H: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((B, H), dtype=dtype), np.zeros((B, H), dtype=dtype)


def input_table(emb, w_ih, b, tokens_t) -> tuple[np.ndarray, np.ndarray]:
    """(T, B) ids → table (U, 4H) of W_x x + b for each distinct character, and where (T, B) indexes it."""
    chars, where = np.unique(tokens_t, return_inverse=True)
    return _matmul(emb[chars], w_ih.T) + b, where.reshape(tokens_t.shape)


@_own_threads
def loss_forward(params, tokens, targets, ignore_index: int) -> tuple[np.ndarray, np.ndarray, LossCache]:
    """(B, T) tokens and targets → per-row summed NLL (B,), scored counts (B,), cache."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    tokens_t, targets_t = tokens.T, targets.T
    B, H = tokens.shape[0], w_hh.shape[1]
    # The output layer runs on scored positions only, time-major; a column of ones carries the bias into the
    # product. Its rows of each finished step go to the other threads while the recurrence goes on.
    mask = targets_t != ignore_index
    starts = np.concatenate([[0], np.cumsum(mask.sum(1))])  # (T+1,) the first row of each step
    sel = np.empty((starts[-1], H + 1), dtype=emb.dtype)  # (N, H+1)
    sel[:, H] = 1.0
    head = _ExpLogits(sel, np.concatenate([w_y.T, b_y[None]]), targets_t[mask])
    with _Backlog() as backlog:
        queued = 0  # rows already handed to the backlog

        def on_step(t: int, h: np.ndarray) -> None:
            nonlocal queued
            sel[starts[t] : starts[t + 1], :H] = h[mask[t]]
            if starts[t + 1] - queued >= _HEAD_ROWS or t + 1 == len(mask):
                for s in _blocks(starts[t + 1] - queued, _HEAD_ROWS):
                    backlog.put(head.block, slice(queued + s.start, queued + s.stop))
                queued = starts[t + 1]

        table, where = input_table(emb, w_ih, b, tokens_t)
        lstm = lstm_forward(table, where, w_hh, *_zeros_state(B, H, emb.dtype), on_step)[1]
    exps, sums, nll = head.finish()
    rows = np.nonzero(mask)[1]
    per_row = np.bincount(rows, weights=nll, minlength=B).astype(emb.dtype)
    cache = LossCache(tokens_t, _with_ones(emb[tokens_t.ravel()]), rows, mask, sel, exps, sums, head.target, lstm)
    return per_row, mask.sum(0), cache


_HEAD_ROWS = 256  # rows of the output layer per task: a block's logits (about 7 MB) stay in cache


class _ExpLogits:
    """exp(sel @ w_aug) (N, V), row sums (N,) and the targets' logits, filled block by block of rows.

    Each block goes through product, exp and sum while it is in cache. The logits come out in base-2 units
    (w_aug scaled by log₂e once) because NumPy's exp2 is about a third cheaper than its exp. There is no
    max-subtraction pass unless a row's sum leaves [2⁻¹⁰⁰, 2⁶⁴] (`finish` checks).
    """

    def __init__(self, sel: np.ndarray, w_aug: np.ndarray, target: np.ndarray) -> None:
        self.sel, self.w_aug, self.target = sel, w_aug, target
        self.w_aug2 = w_aug * np.log2(np.e).astype(w_aug.dtype)  # logits · log₂e: exp2 of them is exp(logits)
        self.exps = np.empty((len(sel), w_aug.shape[1]), dtype=sel.dtype)
        self.sums = np.empty(len(sel), dtype=sel.dtype)
        self.picked = np.empty(len(sel), dtype=sel.dtype)  # the targets' logits, in base-2 units
        self.ones = np.ones(w_aug.shape[1], dtype=sel.dtype)

    def block(self, s: slice) -> None:
        """Rows s of sel → their exps, sums and picked logits."""
        logits2 = np.matmul(self.sel[s], self.w_aug2, out=self.exps[s])
        self.picked[s] = logits2[np.arange(len(logits2)), self.target[s]]
        with np.errstate(over="ignore"):
            np.exp2(logits2, out=logits2)
        np.matmul(logits2, self.ones, out=self.sums[s])  # row sums: BLAS's gemv reads 2× as fast as sum()

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """After every block: exps (never divided out), sums and the NLL of the targets (N,)."""
        exps, sums, shift, picked = self.exps, self.sums, 0.0, self.picked * np.log(2).astype(self.sums.dtype)
        if not ((sums >= FAST_SUMS[0]) & (sums <= FAST_SUMS[1])).all():  # logits beyond about ±44: the stable way
            exps = _matmul(self.sel, self.w_aug)
            picked = exps[np.arange(len(exps)), self.target]
            shift = exps.max(axis=1)
            exps -= shift[:, None]
            np.exp(exps, out=exps)
            exps.sum(axis=1, out=sums)
        return exps, sums, np.log(sums) + shift - picked  # log Σ exp(logits) − logit[target]


@_own_threads
def loss_backward(dnll: np.ndarray, params, cache: LossCache) -> list[np.ndarray]:
    """Upstream gradient of the per-row NLL (B,) → gradients of params, same order and shapes."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    H = w_hh.shape[1]
    # SPEC.md's δ = y − onehot with y = exps / sums: subtract sums at the targets in place, and leave the
    # division (with each row's upstream gradient) to the small (N, H+1) side of the products.
    d = cache.exps
    d[np.arange(len(cache.target)), cache.target] -= cache.sums
    scale = (dnll[cache.rows] / cache.sums)[:, None].astype(emb.dtype)  # (N, 1)
    dhs = np.zeros(cache.lstm.acts.shape[:2] + (H,), dtype=emb.dtype)
    dhs[cache.mask] = _matmul(d, w_y) * scale  # δh_t = W_yᵀ(y_t − onehot_t)
    # W_y's gradient does not wait on the recurrence: its row blocks go to the other threads beside BPTT.
    sel = cache.sel * scale
    dw_aug = np.empty((d.shape[1], H + 1), dtype=emb.dtype)  # (V, H+1): W_y's gradient, b_y's in the last column
    with _Backlog() as backlog:
        for s in _blocks(len(dw_aug), 4 * _HEAD_ROWS):
            backlog.put(lambda s: np.matmul(d.T[s], sel, out=dw_aug[s]), s)
        dpre, dw_hh = lstm_backward(dhs, cache.lstm)
    flat = dpre.reshape(-1, 4 * H)  # (T·B, 4H)
    dx = _matmul(flat, w_ih)  # (T·B, E): Σ_* W_*xᵀ δ*_pre at each position
    # summed per character; one index per element takes NumPy's fast 1-D add.at (about 3× the row-wise form)
    E = emb.shape[1]
    demb = np.zeros(emb.shape, dtype=emb.dtype)
    np.add.at(demb.reshape(-1), (cache.tokens_t.reshape(-1, 1) * E + np.arange(E)).ravel(), dx.ravel())
    dw_x = _matmul(flat.T, cache.x)  # (4H, E+1): W_x's gradient and, in the last column, b's
    return [demb, dw_x[:, :E], dw_hh, dw_x[:, E], dw_aug[:, :H], dw_aug[:, H]]


@_own_threads
def logits_forward(params, tokens, h0, c0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, T) tokens from state (h0, c0) → logits (B, T, V) and the final (h, C); no cache (inference)."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    hs, cache = lstm_forward(*input_table(emb, w_ih, b, tokens.T), w_hh, h0, c0)
    logits = (_matmul(hs.reshape(-1, hs.shape[2]), w_y.T) + b_y).reshape(*hs.shape[:2], -1)  # (T, B, V)
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
