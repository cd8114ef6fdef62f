"""numpy-lstm's packed batch: rows that have read only padding so far share one state.

A training batch is padded in front, and from the zero state a row that has read only padding so far has
the same states as every other such row. So each time step computes one shared row (the lead token's
run, usually padding) and only the batch rows that have begun: a row begins at its first other token, or
at its first scored target if that comes earlier, from the shared row's state. The steps' rows lie one
block after another in packed arrays, (R, …) with R = Σ_t (shared + active[t]); at the course config
about a third of a batch's positions (R ≈ 3,300 of 5,056) are padding that no longer costs a product. The
backward (numpy_steps.lstm_backward) sums the gradients of the rows that began at step t into the shared
row's, so the shared chain gets the gradient of every row that left it: docs/model.md's equations, unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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
