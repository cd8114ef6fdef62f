"""numpy-lstm: the LSTM of docs/model.md in NumPy with hand-written backprop through time, fast.

It computes numpy_reference.py's numbers (tested equal in float64; read that file first) on whole batches,
several times faster. What makes it fast lives beside this file, one concern each:

- numpy_packing.py: rows that have read only padding share one state, so padding costs no product;
- numpy_steps.py: the two recurrences, each step's elementwise work in one C call (cpu_steps.c) on float32;
- numpy_head.py: the output layer in row blocks, exp2 instead of exp, the softmax never divided out;
- numpy_threads.py: NumPy's BLAS single-threaded, and the model's own threads working through a backlog of
  row blocks (the output layer) while one thread runs the recurrence;
- numpy_bridge.py: the torch.autograd.Function that joins the shared training loop.

A character's input projection W_x x + b depends only on the character, so it is computed once per
distinct character of the batch (`input_table`). A column of ones beside x carries b into W_x's gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from poemctl.models import numpy_head, numpy_steps
from poemctl.models.numpy_bridge import NumpyModel
from poemctl.models.numpy_packing import pack
from poemctl.models.numpy_threads import Backlog, matmul, own_threads


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
    keep: np.ndarray | None  # (N, H) output dropout's factors at the scored targets
    lstm: numpy_steps.Cache


def input_table(emb, w_ih, b, tokens) -> tuple[np.ndarray, np.ndarray]:
    """ids (any shape) → table (U, 4H) of W_x x + b for each distinct character, and where (same shape) indexes it."""
    chars, where = np.unique(tokens, return_inverse=True)
    return np.matmul(emb[chars], w_ih.T) + b, where.reshape(tokens.shape)


def _embed_with_ones(emb: np.ndarray, ids: np.ndarray, out: np.ndarray) -> None:
    """out (n, E+1) = the embeddings of ids (n,) and a last column of ones."""
    out[:, :-1] = emb[ids]
    out[:, -1] = 1.0


@own_threads
def loss_forward(params, tokens, targets, ignore_index: int, keep=None) -> tuple[np.ndarray, np.ndarray, LossCache]:
    """(B, T) tokens and targets, and keep (B, T, H), output dropout's factors or None → per-row summed NLL
    (B,), scored counts (B,), cache.

    x_t = emb[token_t], its W_x x_t + b from the table   (on a helper, while the output layer is set up)
    h_t, C_t from x_t, h_{t−1}, C_{t−1}                   numpy_steps.lstm_forward, on this thread
    y_t = softmax(W_y h_t + b_y), at scored targets only  numpy_head.Forward, on the helpers, step by step
    NLL of a row = −Σ_t log y_t[target_t]
    """
    emb, w_ih, w_hh, b, w_y, b_y = params
    tokens_t, targets_t = tokens.T, targets.T
    B, H = tokens.shape[0], w_hh.shape[1]
    scored = targets_t != ignore_index  # (T, B)
    packing = pack(tokens_t, scored)
    lstm = numpy_steps.allocate(packing, w_hh)
    packed = packing.tokens(tokens_t)  # (R,)
    steps, at, rows = packing.positions(scored)  # each scored target's step, packed row and batch row (N,)
    keep = None if keep is None else keep[rows, steps]  # (N, H)
    with Backlog() as backlog:
        inputs = backlog.put(  # urgent: with no helper, the wait below runs it here
            lambda _: numpy_steps.lstm_inputs(lstm, *input_table(emb, w_ih, b, packed)), slice(0), urgent=True
        )
        head = numpy_head.Forward(
            lstm.hs,
            packing.results(steps, at),
            w_y,
            b_y,
            targets_t[steps, rows],
            steps,
            len(packing.active),
            backlog,
            keep,
        )
        x = np.empty((len(packed), emb.shape[1] + 1), dtype=emb.dtype)  # for the backward, filled by a helper
        backlog.put(lambda _: _embed_with_ones(emb, packed, x), slice(0))
        backlog.wait(inputs)
        zeros = np.zeros((B, H), dtype=emb.dtype)
        numpy_steps.lstm_forward(lstm, zeros, zeros, head.step_done)
    exps, sums, nll = head.finish()
    per_row = np.bincount(rows, weights=nll, minlength=B).astype(emb.dtype)
    cache = LossCache(packed, x, rows, at, head.starts, head.sel, exps, sums, head.target, keep, lstm)
    return per_row, scored.sum(0), cache


@own_threads
def loss_backward(dnll: np.ndarray, params, cache: LossCache) -> list[np.ndarray]:
    """Upstream gradient of the per-row NLL (B,) → gradients of params, same order and shapes.

    δ_t = y_t − onehot_t; δh_t = W_yᵀ δ_t; δW_y, δb_y   numpy_head.Backward, on the helpers
    full BPTT → δpre (R, 4H) and δW_h                     numpy_steps.lstm_backward, on this thread
    δW_x, δb = Σ δpre [x_t, 1]ᵀ; δemb[token] += W_xᵀ δpre
    """
    emb, w_ih, w_hh, b, w_y, b_y = params
    H, E = w_hh.shape[1], emb.shape[1]
    c = cache
    with Backlog() as backlog:
        head = numpy_head.Backward(
            c.exps, c.sums, c.sel, c.target, c.rows, c.at, c.starts, dnll, w_y, c.lstm.packing.rows, backlog, c.keep
        )
        dpre, dw_hh = numpy_steps.lstm_backward(head.dh, c.lstm, head.before_step)
        dw_x = np.empty((4 * H, E + 1), dtype=emb.dtype)  # W_x's gradient and, in the last column, b's
        backlog.put(lambda _: np.matmul(dpre.T, c.x, out=dw_x), slice(0))
        dx = dpre @ w_ih  # (R, E): Σ_* W_*xᵀ δ*_pre at each packed row
        # in torch's memory, so the bridge hands it over without a copy; zeroed by NumPy: torch's fill would
        # wake its OpenMP threads, whose spinning after it takes a core from the helpers' products
        demb = torch.empty(emb.shape, dtype=getattr(torch, emb.dtype.name)).numpy()
        demb.fill(0.0)
        # summed per character; one index per element takes NumPy's fast 1-D add.at (about 3× the row-wise form)
        np.add.at(demb.reshape(-1), (c.tokens[:, None] * E + np.arange(E)).ravel(), dx.ravel())
    dw_y, db_y = head.weight_gradients()
    return [demb, dw_x[:, :E], dw_hh, dw_x[:, E], dw_y, db_y]


@own_threads
def logits_forward(params, tokens, h0, c0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, T) tokens from state (h0, c0) → logits (B, T, V) and the final (h, C); no cache (inference)."""
    emb, w_ih, w_hh, b, w_y, b_y = params
    tokens_t = tokens.T
    packing = pack(tokens_t)  # every row from step 0, from its own state
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


class NumpyLSTM(NumpyModel):
    """The LSTM in NumPy with hand-written BPTT, fast; CPU only, float32 (float64 after .double())."""

    description = "the LSTM in NumPy with hand-written backprop through time (CPU)"
    loss_forward = staticmethod(loss_forward)
    loss_backward = staticmethod(loss_backward)
    logits_forward = staticmethod(logits_forward)
