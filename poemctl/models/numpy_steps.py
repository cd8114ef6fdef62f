"""numpy-lstm's two recurrences over a packed batch, with each step's elementwise work in C or in NumPy.

Packing. A training batch is padded in front, and from the zero state a row that has read only padding
so far has the same states as every other such row. So each time step computes one shared row (the lead
token's run, usually padding) and only the batch rows that have begun: a row begins at its first other
token, or at its first scored target if that comes earlier, from the shared row's state. The steps' rows
lie one block after another in packed arrays, (R, …) with R = Σ_t (shared + active[t]); at the course
config about a third of a batch's positions are padding that no longer costs a product. The backward
sums the gradients of the rows that began at step t into the shared row's, so the shared chain gets the
gradient of every row that left it (SPEC.md's equations, unchanged).

Steps. A step is the recurrent product (NumPy's) and the elementwise work: by default one call to
cpu_steps.c (the C step functions torch-lstm uses, built by cpu_steps.library) on float32; in NumPy
calls otherwise (float64, POEMCTL_NO_C_STEPS=1, or no C compiler), ten to twenty calls a step.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from poemctl.models import cpu_steps


class Packing(NamedTuple):
    """Which rows each time step computes, and where its block of rows lies in the packed arrays."""

    lead: int  # the token the shared row reads
    order: np.ndarray  # (B,) batch rows, earliest start first: step t computes rows order[:active[t]]
    active: np.ndarray  # (T,) batch rows computed at step t
    shared: int  # 1 when each block starts with the shared row, 0 when every row starts at step 0
    offsets: np.ndarray  # (T+1,) first packed row of each step's block; offsets[T]: the final states'

    @property
    def rows(self) -> int:
        """R, the packed rows of all steps."""
        return int(self.offsets[-1])

    def block(self, t: int) -> slice:
        """Step t's rows in the packed arrays."""
        return slice(int(self.offsets[t]), int(self.offsets[t]) + self.shared + int(self.active[t]))

    def positions(self, where: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """where (T, B), True only where rows are computed → the step, packed row and batch row of each such
        position (N,), time-major, a step's in packed order."""
        t, k = np.nonzero(where[:, self.order])
        return t, self.offsets[t] + self.shared + k, self.order[k]

    def results(self, steps: np.ndarray, at: np.ndarray) -> np.ndarray:
        """The rows of the hidden states (Cache.hs) that hold h_t of the packed rows at (of steps): the same
        rows of the next step's block."""
        return at + (self.offsets[steps + 1] - self.offsets[steps])

    def tokens(self, tokens_t: np.ndarray) -> np.ndarray:
        """(T, B) input ids → (R,) the id each packed row reads."""
        T, B = tokens_t.shape
        grid = np.concatenate([np.full((T, self.shared), self.lead, tokens_t.dtype), tokens_t[:, self.order]], 1)
        return grid[np.arange(self.shared + B) < (self.shared + self.active)[:, None]]


def pack(tokens_t: np.ndarray, scored: np.ndarray | None = None) -> Packing:
    """(T, B) input ids (T ≥ 1), read from the zero state, and where targets are scored (T, B) → the packing.

    Without `scored` (states given, or every output wanted) every row is computed from step 0.
    """
    T, B = tokens_t.shape
    lead = int(np.bincount(tokens_t[0]).argmax())
    if scored is None:
        start = np.zeros(B, dtype=np.int64)
    else:
        is_lead = tokens_t == lead
        start = np.where(is_lead.all(0), T, is_lead.argmin(0))  # each row's run of the lead token
        start = np.minimum(start, np.where(scored.any(0), scored.argmax(0), T))  # scored rows are computed
    order = np.argsort(start, kind="stable")
    active = np.searchsorted(start[order], np.arange(T), side="right")  # rows started by step t
    shared = int((start > 0).any())
    offsets = np.concatenate([[0], np.cumsum(shared + active)])
    return Packing(lead, order, active, shared, offsets)


class Cache(NamedTuple):
    """A forward's packed arrays, what the backward needs. Row r of a step's block is row r of the next's."""

    packing: Packing
    acts: np.ndarray  # (R, 4H) gate activations i, f, c̃, o
    cs: np.ndarray  # (R + F, H) the cell state each row starts its step from; F: the final states
    tanh_cs: np.ndarray  # (R, H) tanh of the cell state each row ends its step with
    hs: np.ndarray  # (R + F, H) the hidden state each row starts its step from
    w_hh: np.ndarray  # (4H, H)

    def outputs(self, t: int) -> slice:
        """The rows of hs and cs holding step t's results (the start of step t+1's block)."""
        b = self.packing.block(t)
        start = int(self.packing.offsets[t + 1])
        return slice(start, start + b.stop - b.start)


def allocate(packing: Packing, w_hh: np.ndarray) -> Cache:
    """Empty packed arrays for a forward with W_hh (4H, H), in its dtype."""
    R, F = packing.rows, packing.shared + int(packing.active[-1])
    H = w_hh.shape[1]
    empty = functools.partial(np.empty, dtype=w_hh.dtype)
    return Cache(packing, empty((R, 4 * H)), empty((R + F, H)), empty((R, H)), empty((R + F, H)), w_hh)


class _NumpySteps:
    """A step's elementwise work in NumPy calls. Gate pre-activations come with i, f, o halved:
    σ(z) = (1 + tanh(z/2)) / 2, so one tanh over the (rows, 4H) block covers all four gates."""

    def __init__(self, cache: Cache) -> None:
        self.c = cache
        H = cache.w_hh.shape[1]
        self.scale = np.full(4 * H, 0.5, dtype=cache.acts.dtype)  # i, f, o halved, c̃ as it is
        self.scale[2 * H : 3 * H] = 1.0
        self.shift = np.where(self.scale == 0.5, 0.5, 0.0).astype(cache.acts.dtype)

    def forward(self, rows: slice, out: slice) -> None:
        """acts[rows] (pre-activations) → activations; cell, tanh and hidden states of the step into out."""
        c = self.c
        H = c.w_hh.shape[1]
        a = c.acts[rows]
        np.tanh(a, out=a)
        a *= self.scale
        a += self.shift  # i, f, o = σ(z), c̃ = tanh(z)
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        c_new = c.cs[out]
        np.multiply(f, c.cs[rows], out=c_new)
        c_new += i * g  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
        np.tanh(c_new, out=c.tanh_cs[rows])
        np.multiply(o, c.tanh_cs[rows], out=c.hs[out])  # h_t = o ⊙ tanh(C_t)

    def backward(self, rows: slice, dh: np.ndarray, dc_in: np.ndarray, d: np.ndarray, dc_out: np.ndarray) -> None:
        """dh (rows, H) with the recurrent part, dc_in = δC_{t+1} ⊙ f_{t+1} → d (rows, 4H), dc_out = δC_t ⊙ f_t."""
        c = self.c
        H = c.w_hh.shape[1]
        a = c.acts[rows]
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        tc = c.tanh_cs[rows]
        dc = dh * o * (1.0 - tc * tc) + dc_in  # δC_t
        d[:, :H] = dc * g * i * (1.0 - i)  # δi_pre
        d[:, H : 2 * H] = dc * c.cs[rows] * f * (1.0 - f)  # δf_pre, cs[rows] is C_{t−1}
        d[:, 2 * H : 3 * H] = dc * i * (1.0 - g * g)  # δc̃_pre
        d[:, 3 * H :] = dh * tc * o * (1.0 - o)  # δo_pre
        np.multiply(dc, f, out=dc_out)


class _CSteps:
    """A step's elementwise work in one call to cpu_steps.c (float32). Gate pre-activations come with c̃
    doubled: the C computes tanh(z) as 2σ(2z) − 1. Addresses are computed from each array's start."""

    def __init__(self, cache: Cache, lib) -> None:
        self.c, self.lib = cache, lib
        H = cache.w_hh.shape[1]
        self.scale = np.ones(4 * H, dtype=np.float32)
        self.scale[2 * H : 3 * H] = 2.0
        self.row = 4 * H  # bytes per row of an (·, H) array; (·, 4H) rows are four of them
        self.acts, self.cs, self.tanh_cs, self.hs = (x.ctypes.data for x in cache[1:5])
        self.H = H

    def forward(self, rows: slice, out: slice) -> None:
        """As _NumpySteps.forward."""
        r, o, n = rows.start * self.row, out.start * self.row, rows.stop - rows.start
        self.lib.forward_step(self.acts + 4 * r, self.cs + r, self.cs + o, self.tanh_cs + r, self.hs + o, n, self.H)

    def backward(self, rows: slice, dh: np.ndarray, dc_in: np.ndarray, d: np.ndarray, dc_out: np.ndarray) -> None:
        """As _NumpySteps.backward; dh, dc_in, d and dc_out contiguous."""
        r, n = rows.start * self.row, rows.stop - rows.start
        args = (dh.ctypes.data, dc_in.ctypes.data, d.ctypes.data, dc_out.ctypes.data)
        self.lib.backward_step(self.acts + 4 * r, self.cs + r, self.tanh_cs + r, *args, n, self.H)


def c_library(dtype):
    """cpu_steps.c's functions for arrays of dtype: float32 only, where the C is built; None otherwise."""
    return cpu_steps.library() if dtype == np.float32 else None


def steps_for(cache: Cache) -> _CSteps | _NumpySteps:
    """The C steps for float32 where they are built, the NumPy steps otherwise."""
    if (lib := c_library(cache.acts.dtype)) is not None:
        return _CSteps(cache, lib)
    return _NumpySteps(cache)


def lstm_inputs(cache: Cache, table, where) -> None:
    """cache.acts (R, 4H) = the input projections of the packed rows, as the steps take them: table (U, 4H) of
    W_x x + b per character, where (R,) indexes it per packed row."""
    # mode="clip": with out=, the default mode is 3× slower
    np.take(table * steps_for(cache).scale, where, axis=0, out=cache.acts, mode="clip")


def lstm_forward(cache: Cache, h0, c0, on_step=None) -> Cache:
    """Fill cache from its input projections (lstm_inputs) and h0, c0 (B, H).

    on_step(t), when given, is called as soon as step t's hidden states are in cache.hs[cache.outputs(t)].
    """
    p, w_hh = cache.packing, cache.w_hh
    steps = steps_for(cache)
    w_hh_t = np.ascontiguousarray((w_hh * steps.scale[:, None]).T)  # (H, 4H)
    first = p.block(0)
    begun = slice(first.start + p.shared, first.stop)  # the rows computed from step 0 start from (h0, c0)
    cache.hs[first], cache.cs[first] = 0.0, 0.0  # the shared row starts from the zero state
    cache.hs[begun], cache.cs[begun] = h0[p.order[: p.active[0]]], c0[p.order[: p.active[0]]]
    mm = np.empty((p.shared + len(p.order), w_hh_t.shape[1]), dtype=cache.acts.dtype)
    for t in range(len(p.active)):
        rows, out = p.block(t), cache.outputs(t)
        n = rows.stop - rows.start
        np.matmul(cache.hs[rows], w_hh_t, out=mm[:n])
        cache.acts[rows] += mm[:n]
        steps.forward(rows, out)
        if t + 1 < len(p.active) and p.active[t + 1] > p.active[t]:  # rows that begin at t+1: the shared state
            begin = slice(out.stop, out.start + p.shared + int(p.active[t + 1]))
            cache.hs[begin], cache.cs[begin] = cache.hs[out.start], cache.cs[out.start]
        if on_step is not None:
            on_step(t)
    return cache


def lstm_backward(dh: np.ndarray, cache: Cache, before_step=None) -> tuple[np.ndarray, np.ndarray]:
    """Full BPTT (through W_*h into h_{t−1} and through f into C_{t−1}): dh (R, H), the gradient of each packed
    row's output h_t (overwritten) → δpre (R, 4H) and dW_hh.

    before_step(t), when given, is called before step t reads dh[block(t)] and adds to dh[block(t − 1)]: the
    rows of both may still be coming in.
    """
    p, w_hh = cache.packing, cache.w_hh
    steps = steps_for(cache)
    dpre = np.empty_like(cache.acts)
    dcs = np.zeros((2, p.shared + len(p.order), w_hh.shape[1]), dtype=dh.dtype)  # δC ⊙ f, in and out, in turns
    T = len(p.active)
    for t in reversed(range(T)):
        rows = p.block(t)
        n = rows.stop - rows.start
        dc_in, dc_out = dcs[(T - 1 - t) % 2], dcs[(T - t) % 2]
        if before_step is not None:
            before_step(t)
        steps.backward(rows, dh[rows], dc_in[:n], dpre[rows], dc_out[:n])
        if t == 0:
            break
        prev = p.block(t - 1)
        m = prev.stop - prev.start
        g = dpre[rows] @ w_hh  # (n, H) Σ_* W_*hᵀ δ*_pre: the gradient of the states step t started from
        dh[prev] += g[:m]
        if n > m:  # rows that began at step t started from the shared row's state: their gradients are its
            dh[prev.start] += g[m:].sum(0)
            dc_out[0] += dc_out[m:n].sum(0)
    return dpre, dpre.T @ cache.hs[: p.rows]
