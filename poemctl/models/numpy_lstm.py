"""numpy-lstm: SPEC.md's LSTM in NumPy with hand-written backprop through time, batched.

The NumPy code works on whole batches: one matrix product per time step for all four gates, over the
rows of a packed batch (numpy_steps.py: rows still reading padding share one state), and each step's
elementwise work in one C call (the C steps torch-lstm uses) or, without them, in NumPy calls. A
character's input projection W_x x + b depends only on the character, so the forward computes it once per
distinct character of the batch (a table). `loss_forward` returns a cache and `loss_backward` turns it
into gradients (Karpathy's layout); `NumpyLSTM` joins the shared training loop through a
torch.autograd.Function, so optimizers, clipping, checkpoints and multi-process training are the same.

Threads (numpy_threads.py): NumPy's BLAS runs single-threaded inside the model, and the model's own threads
share out the large products. While one thread runs the recurrence, the others work through what does not
wait on it: forward, the output layer of the steps already done (and, while the caller sets up, the
recurrence's input projections); backward, the output layer's gradient for the last steps first (the
recurrence goes back through time and takes it as it comes), then W_y's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from poemctl.models import numpy_steps
from poemctl.models.base import ModelOutput, PoemModel, State
from poemctl.models.head import FAST_SUMS
from poemctl.models.numpy_threads import Backlog, blocks, matmul, own_threads, threads


class LossCache(NamedTuple):
    """What loss_backward needs from loss_forward."""

    tokens: np.ndarray  # (R,) the input id each packed row reads
    x: np.ndarray  # (R, E+1) their embeddings, and a column of ones (for the bias gradient)
    rows: np.ndarray  # (N,) batch row of each scored target
    at: np.ndarray  # (N,) packed row of each scored target
    starts: np.ndarray  # (T+1,) the first scored target of each step (they are time-major)
    sel: np.ndarray  # (N, H+1) hidden states at scored targets, and a column of ones
    exps: np.ndarray  # (N, V) exp of the (shifted) logits, not normalised
    sums: np.ndarray  # (N,) their row sums: the softmax is exps / sums
    target: np.ndarray  # (N,) target ids
    lstm: numpy_steps.Cache


def _embed_with_ones(emb: np.ndarray, ids: np.ndarray, out: np.ndarray) -> None:
    """out (n, E+1) = the embeddings of ids (n,) and a last column of ones: the bias rides along in products."""
    out[:, :-1] = emb[ids]
    out[:, -1] = 1.0


def input_table(emb, w_ih, b, tokens) -> tuple[np.ndarray, np.ndarray]:
    """ids (any shape) → table (U, 4H) of W_x x + b for each distinct character, and where (same shape) indexes it.

    On one thread: the training forward runs it on a helper while the caller sets up the output layer.
    """
    chars, where = np.unique(tokens, return_inverse=True)
    return np.matmul(emb[chars], w_ih.T) + b, where.reshape(tokens.shape)


@own_threads
def loss_forward(params, tokens, targets, ignore_index: int) -> tuple[np.ndarray, np.ndarray, LossCache]:
    """(B, T) tokens and targets → per-row summed NLL (B,), scored counts (B,), cache."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    tokens_t, targets_t = tokens.T, targets.T
    B, H = tokens.shape[0], w_hh.shape[1]
    scored = targets_t != ignore_index  # (T, B)
    packing = numpy_steps.pack(tokens_t, scored)
    lstm = numpy_steps.allocate(packing, w_hh)
    # The output layer runs on scored targets only, time-major; a column of ones carries the bias into the
    # product. The rows of each finished step go to the other threads while the recurrence goes on.
    steps, at, rows = packing.positions(scored)
    starts = np.searchsorted(steps, np.arange(len(packing.active) + 1))  # (T+1,)
    packed = packing.tokens(tokens_t)
    with Backlog() as backlog:
        # the recurrence's inputs on a helper while this thread sets up the output layer (urgent: with no
        # helper, the wait below runs it here)
        inputs = backlog.put(
            lambda _: numpy_steps.lstm_inputs(lstm, *input_table(emb, w_ih, b, packed)), slice(0), urgent=True
        )
        head = _ExpLogits(
            lstm.hs, packing.results(steps, at), np.concatenate([w_y.T, b_y[None]]), targets_t[steps, rows]
        )
        x = np.empty((len(packed), emb.shape[1] + 1), dtype=emb.dtype)  # for the backward, filled by a helper
        backlog.put(lambda _: _embed_with_ones(emb, packed, x), slice(0))
        queued, last = 0, backlog.put(lambda _: None, slice(0))  # rows handed to the backlog, its last task

        def on_step(t: int) -> None:
            nonlocal queued, last
            ready, end = starts[t + 1] - queued, t + 1 == len(packing.active)
            # during the recurrence, the rows ready whenever the helpers have run out of work (the first
            # scored targets come late in a batch padded in front); after it, the rest in one share per
            # thread (one product over many rows packs W_y once: about 10% faster than 256-row blocks)
            if end or (ready >= _FIRST_ROWS and last.is_set()):
                for s in blocks(ready, -(-ready // threads()) if end else _HEAD_ROWS):
                    last = backlog.put(head.block, slice(queued + s.start, queued + s.stop))
                queued += ready

        backlog.wait(inputs)
        numpy_steps.lstm_forward(lstm, *_zeros_state(B, H, emb.dtype), on_step)
    exps, sums, nll = head.finish()
    per_row = np.bincount(rows, weights=nll, minlength=B).astype(emb.dtype)
    cache = LossCache(packed, x, rows, at, starts, head.sel, exps, sums, head.target, lstm)
    return per_row, scored.sum(0), cache


def _zeros_state(B: int, H: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((B, H), dtype=dtype), np.zeros((B, H), dtype=dtype)


_HEAD_ROWS = 256  # rows of the output layer per task, and per exp pass
_FIRST_ROWS = 16  # the least rows handed to idle helpers
_DW_ROWS = 2048  # rows of W_y's gradient per task


class _ExpLogits:
    """exp(sel @ w_aug) (N, V), row sums (N,) and the targets' logits, filled block by block of rows.

    A block first gathers its hidden states (sel, with a column of ones) from the recurrence's packed
    rows, then takes one product, then exp and sums by 256 rows, while they are in cache. The logits come
    out in base-2 units (w_aug scaled by log₂e once) because NumPy's exp2 is about a third cheaper than its
    exp; in float32, exp2 and the sums are one pass of cpu_steps.c (exp2_rows) where the C is built. There
    is no max-subtraction pass unless a row's sum leaves [2⁻¹⁰⁰, 2⁶⁴] (`finish` checks).
    """

    def __init__(self, hs: np.ndarray, at: np.ndarray, w_aug: np.ndarray, target: np.ndarray) -> None:
        self.hs, self.at, self.w_aug, self.target = hs, at, w_aug, target
        self.sel = np.empty((len(at), w_aug.shape[0]), dtype=hs.dtype)  # (N, H+1)
        self.sel[:, -1] = 1.0
        self.w_aug2 = w_aug * np.log2(np.e).astype(w_aug.dtype)  # logits · log₂e: exp2 of them is exp(logits)
        self.exps = np.empty((len(at), w_aug.shape[1]), dtype=hs.dtype)
        self.sums = np.empty(len(at), dtype=hs.dtype)
        self.picked = np.empty(len(at), dtype=hs.dtype)  # the targets' logits, in base-2 units
        self.ones = np.ones(w_aug.shape[1], dtype=hs.dtype)
        self.lib = numpy_steps.c_library(hs.dtype)

    def block(self, s: slice) -> None:
        """Rows s → their hidden states, then one product, then exps, sums and picked logits by _HEAD_ROWS rows."""
        self.sel[s, :-1] = self.hs[self.at[s]]
        np.matmul(self.sel[s], self.w_aug2, out=self.exps[s])
        for part in blocks(s.stop - s.start, _HEAD_ROWS):
            r = slice(s.start + part.start, s.start + part.stop)
            logits2 = self.exps[r]
            self.picked[r] = logits2[np.arange(len(logits2)), self.target[r]]
            if self.lib is not None:  # exp2 and the row sums in one pass
                self.lib.exp2_rows(logits2.ctypes.data, self.sums[r].ctypes.data, *logits2.shape)
            else:
                with np.errstate(over="ignore"):
                    np.exp2(logits2, out=logits2)
                np.matmul(logits2, self.ones, out=self.sums[r])  # row sums: BLAS's gemv reads 2× as fast as sum()

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """After every block: exps (never divided out), sums and the NLL of the targets (N,)."""
        exps, sums, shift, picked = self.exps, self.sums, 0.0, self.picked * np.log(2).astype(self.sums.dtype)
        if not ((sums >= FAST_SUMS[0]) & (sums <= FAST_SUMS[1])).all():  # logits beyond about ±44: the stable way
            exps = matmul(self.sel, self.w_aug)
            picked = exps[np.arange(len(exps)), self.target]
            shift = exps.max(axis=1)
            exps -= shift[:, None]
            np.exp(exps, out=exps)
            exps.sum(axis=1, out=sums)
        return exps, sums, np.log(sums) + shift - picked  # log Σ exp(logits) − logit[target]


@own_threads
def loss_backward(dnll: np.ndarray, params, cache: LossCache) -> list[np.ndarray]:
    """Upstream gradient of the per-row NLL (B,) → gradients of params, same order and shapes."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    H, E = w_hh.shape[1], emb.shape[1]
    # SPEC.md's δ = y − onehot with y = exps / sums: subtract sums at the targets in place, and leave the
    # division (with each row's upstream gradient) to the small (N, H+1) side of the products.
    d = cache.exps
    d[np.arange(len(cache.target)), cache.target] -= cache.sums
    scale = (dnll[cache.rows] / cache.sums)[:, None].astype(emb.dtype)  # (N, 1)
    dh = np.zeros((cache.lstm.packing.rows, H), dtype=emb.dtype)  # (R, H) gradient of each packed row's h_t
    sel = cache.sel * scale
    dw_aug = np.empty((d.shape[1], H + 1), dtype=emb.dtype)  # (V, H+1): W_y's gradient, b_y's in the last column

    def dh_block(s: slice) -> None:
        dh[cache.at[s]] = np.matmul(d[s], w_y) * scale[s]  # δh_t = W_yᵀ(y_t − onehot_t)

    with Backlog() as backlog:
        # δh from the last steps back, as the recurrence needs it (urgent: the caller computes its share
        # rather than wait); W_y's gradient after, beside the recurrence
        pending = [(s.stop, backlog.put(dh_block, s, urgent=True)) for s in reversed(blocks(len(d), _HEAD_ROWS))]
        for s in blocks(len(dw_aug), _DW_ROWS):
            backlog.put(lambda s: np.matmul(d.T[s], sel, out=dw_aug[s]), s)

        def before_step(t: int) -> None:  # δh of steps t and t−1 in: every block that reaches them
            while pending and pending[0][0] > cache.starts[max(t - 1, 0)]:
                backlog.wait(pending.pop(0)[1])

        dpre, dw_hh = numpy_steps.lstm_backward(dh, cache.lstm, before_step)
        dw_x = np.empty((4 * H, E + 1), dtype=emb.dtype)  # W_x's gradient and, in the last column, b's
        backlog.put(lambda _: np.matmul(dpre.T, cache.x, out=dw_x), slice(0))
        dx = dpre @ w_ih  # (R, E): Σ_* W_*xᵀ δ*_pre at each packed row
        # in torch's memory, so the bridge hands it over without a copy (see _tensor); zeroed by NumPy: torch's
        # fill would wake its OpenMP threads, whose spinning after it takes a core from the helpers' products
        demb = torch.empty(emb.shape, dtype=getattr(torch, emb.dtype.name)).numpy()
        demb.fill(0.0)
        # summed per character; one index per element takes NumPy's fast 1-D add.at (about 3× the row-wise form)
        np.add.at(demb.reshape(-1), (cache.tokens[:, None] * E + np.arange(E)).ravel(), dx.ravel())
    return [demb, dw_x[:, :E], dw_hh, dw_x[:, E], dw_aug[:, :H], dw_aug[:, H]]


@own_threads
def logits_forward(params, tokens, h0, c0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, T) tokens from state (h0, c0) → logits (B, T, V) and the final (h, C); no cache (inference)."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    tokens_t = tokens.T
    packing = numpy_steps.pack(tokens_t)  # every row from step 0, from its own state
    lstm = numpy_steps.allocate(packing, w_hh)
    numpy_steps.lstm_inputs(lstm, *input_table(emb, w_ih, b, packing.tokens(tokens_t)))
    numpy_steps.lstm_forward(lstm, h0, c0)
    T, B = tokens_t.shape
    steps, at, rows = packing.positions(np.ones((T, B), dtype=bool))
    hs = np.empty((T, B, w_hh.shape[1]), dtype=w_hh.dtype)
    hs[steps, rows] = lstm.hs[packing.results(steps, at)]
    logits = (matmul(hs.reshape(T * B, -1), w_y.T) + b_y).reshape(T, B, -1)
    last = lstm.outputs(T - 1)
    h, c = np.empty_like(h0), np.empty_like(c0)
    h[packing.order], c[packing.order] = lstm.hs[last], lstm.cs[last]
    return logits.transpose(1, 0, 2), h, c


def _tensor(a: np.ndarray) -> torch.Tensor:
    """a as a tensor that owns its memory: the tensor a is a whole view of, else a copy.

    Why not torch.from_numpy: its tensor holds the array, and freeing it takes the GIL. gloo frees the
    tensors it gathers on its own threads, and one that does so while Python shuts down aborts the process.
    """
    if isinstance(a.base, torch.Tensor) and a.base.data_ptr() == a.ctypes.data and a.base.shape == a.shape:
        return a.base
    return torch.from_numpy(a).clone()


class _NumpyLoss(torch.autograd.Function):
    """The bridge: forward runs NumPy and keeps the cache, backward runs the hand-written BPTT."""

    @staticmethod
    def forward(ctx, tokens, targets, ignore_index, *params):
        arrays = [p.detach().numpy() for p in params]
        nll, count, cache = loss_forward(arrays, tokens.numpy(), targets.numpy(), ignore_index)
        ctx.arrays, ctx.cache = arrays, cache
        count = _tensor(count)
        ctx.mark_non_differentiable(count)
        return _tensor(nll), count

    @staticmethod
    def backward(ctx, dnll, _dcount):
        grads = loss_backward(dnll.detach().numpy(), ctx.arrays, ctx.cache)
        ctx.cache = None  # the cache is large: free it as soon as it is used
        return (None, None, None, *(_tensor(g) for g in grads))


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
            return ModelOutput(_tensor(logits), (_tensor(h), _tensor(c)), None, None)
        if state is not None:
            raise ValueError("numpy-lstm computes a loss from the zero state only")
        nll, count = _NumpyLoss.apply(tokens, targets, ignore_index, *self._params())
        return ModelOutput(None, None, nll, count)
