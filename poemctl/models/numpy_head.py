"""numpy-lstm's output layer and cross-entropy, in row blocks that the model's threads share out.

The output layer is most of a training step (N scored targets × V ≈ 7,500 characters). Forward, its rows
are handed to the other threads as the recurrence finishes the steps they belong to (`Forward`); backward,
δh is computed for the last steps first, as the recurrence going back through time needs it, then
W_y's gradient beside the recurrence (`Backward`). The numbers are numpy_reference.py's:

    y_t = softmax(W_y h_t + b_y),  E = −Σ_t log y_t[target_t],  δ_t = y_t − onehot_t,  δh_t = W_yᵀ δ_t

Two shortcuts, both exact up to rounding: the softmax is never divided out (exps / sums is y; the backward
folds 1/sum into the small (N, H+1) side of its products), and the logits come in base-2 units (W_y scaled
by log₂e once) because exp2 is about a third cheaper than exp. A column of ones carries b_y into the
products.
"""

from __future__ import annotations

import numpy as np

from poemctl.models import numpy_steps
from poemctl.models.head import FAST_SUMS
from poemctl.models.numpy_threads import Backlog, blocks, matmul, threads

HEAD_ROWS = 256  # rows of the output layer per task, and per exp pass
FIRST_ROWS = 16  # the least rows handed to idle helpers
DW_ROWS = 2048  # rows of W_y's gradient per task


class ExpLogits:
    """exp(sel @ w_aug) (N, V), row sums (N,) and the targets' logits, filled block by block of rows.

    A block first gathers its hidden states (sel, with a column of ones) from the recurrence's packed
    rows, then takes one product, then exp and sums by HEAD_ROWS rows, while they are in cache. In float32,
    exp2 and the sums are one pass of cpu_steps.c (exp2_rows) where the C is built. There is no
    max-subtraction pass unless a row's sum leaves [2⁻¹⁰⁰, 2⁶⁴] (`finish` checks).
    """

    def __init__(self, hs: np.ndarray, at: np.ndarray, w_aug: np.ndarray, target: np.ndarray, keep=None) -> None:
        self.hs, self.at, self.w_aug, self.target, self.keep = hs, at, w_aug, target, keep  # keep: (N, H) or None
        self.sel = np.empty((len(at), w_aug.shape[0]), dtype=hs.dtype)  # (N, H+1)
        self.sel[:, -1] = 1.0
        self.w_aug2 = w_aug * np.log2(np.e).astype(w_aug.dtype)  # logits · log₂e: exp2 of them is exp(logits)
        self.exps = np.empty((len(at), w_aug.shape[1]), dtype=hs.dtype)
        self.sums = np.empty(len(at), dtype=hs.dtype)
        self.picked = np.empty(len(at), dtype=hs.dtype)  # the targets' logits, in base-2 units
        self.ones = np.ones(w_aug.shape[1], dtype=hs.dtype)
        self.lib = numpy_steps.c_library(hs.dtype)

    def block(self, s: slice) -> None:
        """Rows s → their hidden states, then one product, then exps, sums and picked logits by HEAD_ROWS rows."""
        self.sel[s, :-1] = self.hs[self.at[s]]
        if self.keep is not None:  # output dropout
            self.sel[s, :-1] *= self.keep[s]
        np.matmul(self.sel[s], self.w_aug2, out=self.exps[s])
        for part in blocks(s.stop - s.start, HEAD_ROWS):
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


class Forward(ExpLogits):
    """The output layer of a forward, fed to the backlog step by step: `step_done` is lstm_forward's on_step.

    Scored targets are time-major, so the rows of step t are ready once the recurrence has done step t.
    During the recurrence the ready rows go to the helpers whenever they have run out of work (the first
    scored targets come late in a batch padded in front); after it, the rest in one share per thread (one
    product over many rows packs W_y once: about 10% faster than 256-row blocks).
    """

    def __init__(self, hs, at, w_y, b_y, target, steps, n_steps: int, backlog: Backlog, keep=None) -> None:
        super().__init__(hs, at, np.concatenate([w_y.T, b_y[None]]), target, keep)
        self.starts = np.searchsorted(steps, np.arange(n_steps + 1))  # (T+1,) each step's first scored target
        self.backlog = backlog
        self.queued = 0  # rows handed to the backlog
        self.last = backlog.put(lambda _: None, slice(0))  # the last task handed over

    def step_done(self, t: int) -> None:
        """Step t's hidden states are in: hand ready rows to the backlog."""
        ready, end = self.starts[t + 1] - self.queued, t + 2 == len(self.starts)
        if end or (ready >= FIRST_ROWS and self.last.is_set()):
            for s in blocks(ready, -(-ready // threads()) if end else HEAD_ROWS):
                self.last = self.backlog.put(self.block, slice(self.queued + s.start, self.queued + s.stop))
            self.queued += ready


class Backward:
    """The output layer's gradients, queued on the backlog: δh (R, H) for each packed row, W_y's and b_y's.

    δh comes from the last steps back (urgent: the caller computes its share rather than wait), W_y's
    gradient after it, beside the recurrence. `before_step` is lstm_backward's: it waits for the δh rows of
    steps t and t−1. keep: output dropout's factors (N, H) at the scored targets, or None.
    """

    def __init__(self, exps, sums, sel, target, rows, at, starts, dnll, w_y, packed_rows: int, backlog, keep) -> None:
        H = w_y.shape[1]
        # δ = y − onehot with y = exps / sums: subtract sums at the targets in place, and leave the division
        # (with each row's upstream gradient) to the small (N, H+1) side of the products
        d = exps
        d[np.arange(len(target)), target] -= sums
        scale = (dnll[rows] / sums)[:, None].astype(w_y.dtype)  # (N, 1)
        self.dh = np.zeros((packed_rows, H), dtype=w_y.dtype)  # (R, H) gradient of each packed row's h_t
        sel = sel * scale
        self.dw_aug = np.empty((d.shape[1], H + 1), dtype=w_y.dtype)  # (V, H+1): W_y's, b_y's in the last column
        self.starts, self.backlog = starts, backlog

        def dh_block(s: slice) -> None:
            dh = np.matmul(d[s], w_y) * scale[s]  # δh_t = W_yᵀ δ_t
            self.dh[at[s]] = dh if keep is None else dh * keep[s]  # through output dropout

        self.pending = [(s.stop, backlog.put(dh_block, s, urgent=True)) for s in reversed(blocks(len(d), HEAD_ROWS))]
        for s in blocks(len(self.dw_aug), DW_ROWS):
            backlog.put(lambda s: np.matmul(d.T[s], sel, out=self.dw_aug[s]), s)

    def before_step(self, t: int) -> None:
        """Wait for δh of steps t and t−1: every block that reaches them."""
        while self.pending and self.pending[0][0] > self.starts[max(t - 1, 0)]:
            self.backlog.wait(self.pending.pop(0)[1])

    def weight_gradients(self) -> tuple[np.ndarray, np.ndarray]:
        """W_y's and b_y's gradients, once the backlog is done."""
        H = self.dw_aug.shape[1] - 1
        return self.dw_aug[:, :H], self.dw_aug[:, H]
