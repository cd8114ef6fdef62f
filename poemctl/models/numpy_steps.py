"""numpy-lstm's two recurrences over a packed batch (numpy_packing.py), each step's elementwise work in C or NumPy.

A step is the recurrent product (NumPy's) and the elementwise work: by default one call to cpu_steps.c
(the C step functions torch-lstm uses, built by cpu_steps.library) on float32; in NumPy calls otherwise
(float64, POEMCTL_NO_C_STEPS=1, or no C compiler), ten to twenty calls a step. Both take the gate
pre-activations with c̃'s doubled (gates.py), and compute docs/model.md's equations as numpy_reference.py does.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from poemctl.models import cpu_steps
from poemctl.models.gates import gate_scale
from poemctl.models.numpy_packing import Packing


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
    """A step's elementwise work in NumPy calls, on pre-activations with c̃'s doubled (gates.py)."""

    def __init__(self, cache: Cache) -> None:
        self.c = cache
        H = cache.w_hh.shape[1]
        # σ(z) = (1 + tanh(z/2)) / 2 for i, f, o; for c̃, tanh(2z/2) = tanh(z): one tanh over the whole block
        self.scale = gate_scale(H, cache.acts.dtype) / 2  # the tanh's result: ½ for i, f, o, 1 for c̃
        self.shift = np.where(self.scale == 0.5, 0.5, 0.0).astype(cache.acts.dtype)

    def forward(self, rows: slice, out: slice) -> None:
        """acts[rows] (pre-activations) → activations; cell, tanh and hidden states of the step into out."""
        c = self.c
        H = c.w_hh.shape[1]
        a = c.acts[rows]
        a *= 0.5
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
    """A step's elementwise work in one call to cpu_steps.c (float32), on pre-activations with c̃'s doubled
    (gates.py). Addresses are computed from each array's start."""

    def __init__(self, cache: Cache, lib) -> None:
        self.c, self.lib = cache, lib
        H = cache.w_hh.shape[1]
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
    scale = gate_scale(cache.w_hh.shape[1], cache.acts.dtype)
    np.take(table * scale, where, axis=0, out=cache.acts, mode="clip")


def lstm_forward(cache: Cache, h0, c0, on_step=None) -> Cache:
    """Fill cache from its input projections (lstm_inputs) and h0, c0 (B, H).

    on_step(t), when given, is called as soon as step t's hidden states are in cache.hs[cache.outputs(t)].
    """
    p, w_hh = cache.packing, cache.w_hh
    steps = steps_for(cache)
    w_hh_t = np.ascontiguousarray((w_hh * gate_scale(w_hh.shape[1], w_hh.dtype)[:, None]).T)  # (H, 4H)
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
