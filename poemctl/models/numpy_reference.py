"""The LSTM of docs/model.md in plain NumPy, backprop through time written by hand: the version to read first.

A batch of poems goes through one time step after another, one matrix product per step for all four
gates. `loss_forward` returns the loss and a cache; `loss_backward` takes the cache and returns the
gradient of every parameter (the layout of Karpathy's min-char-rnn). docs/model.md derives each line of
`lstm_backward`. Nothing here is about speed: numpy_lstm.py computes the same numbers (tested equal in
float64) several times faster, and `poemctl gradcheck` checks every model against this file.

Arrays are time-major: x[t] is the batch at step t. Parameters, in the canonical layout of models/base.py
(V characters, E embedding, H hidden; gate blocks stacked i, f, c̃, o, each H rows):

    emb (V, E)   W_x (4H, E)   W_h (4H, H)   b (4H,)   W_y (V, H)   b_y (V,)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from poemctl.models.numpy_bridge import NumpyModel


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^−z), written through tanh so that no e^z overflows."""
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


def gate_blocks(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """(B, 4H) → its four (B, H) blocks i, f, c̃, o."""
    return tuple(np.split(a, 4, axis=1))


class LSTMCache(NamedTuple):
    """What lstm_backward needs from lstm_forward."""

    x: np.ndarray  # (T, B, E) inputs x_t
    hs: np.ndarray  # (T+1, B, H) h_0 … h_T
    cs: np.ndarray  # (T+1, B, H) C_0 … C_T
    gates: np.ndarray  # (T, B, 4H) i_t, f_t, c̃_t, o_t side by side


def lstm_forward(x, h0, c0, w_x, w_h, b) -> LSTMCache:
    """x (T, B, E) from the state h0, c0 (B, H) → every h_t and C_t, and the gates."""
    T, B, _ = x.shape
    H = w_h.shape[1]
    hs = np.empty((T + 1, B, H), dtype=x.dtype)
    cs = np.empty((T + 1, B, H), dtype=x.dtype)
    gates = np.empty((T, B, 4 * H), dtype=x.dtype)
    hs[0], cs[0] = h0, c0
    for t in range(T):
        z_i, z_f, z_c, z_o = gate_blocks(x[t] @ w_x.T + hs[t] @ w_h.T + b)  # W_*x x_t + W_*h h_{t−1} + b_*
        i = sigmoid(z_i)  # input gate
        f = sigmoid(z_f)  # forget gate
        c_tilde = np.tanh(z_c)  # candidate cell
        o = sigmoid(z_o)  # output gate
        cs[t + 1] = f * cs[t] + i * c_tilde  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
        hs[t + 1] = o * np.tanh(cs[t + 1])  # h_t = o ⊙ tanh(C_t)
        gates[t] = np.concatenate([i, f, c_tilde, o], axis=1)
    return LSTMCache(x, hs, cs, gates)


def lstm_backward(dh_out, cache: LSTMCache, w_x, w_h) -> tuple[np.ndarray, ...]:
    """Full BPTT: dh_out (T, B, H), ∂E/∂h_t from the output layer → dx (T, B, E), dW_x, dW_h, db, δh_0, δC_0.

    The gradient reaches step t−1 by both recurrent paths: through W_*h into h_{t−1}, and through f into
    C_{t−1} (the course code left both out).
    """
    x, hs, cs, gates = cache
    T, B, H = dh_out.shape
    dx = np.empty_like(x)
    dw_x, dw_h, db = np.zeros_like(w_x), np.zeros_like(w_h), np.zeros(4 * H, dtype=x.dtype)
    dh_next = np.zeros((B, H), dtype=x.dtype)  # Σ_* W_*hᵀ δ*_pre of step t+1
    dc_next = np.zeros((B, H), dtype=x.dtype)  # δC_{t+1} ⊙ f_{t+1}
    for t in reversed(range(T)):
        i, f, c_tilde, o = gate_blocks(gates[t])
        tanh_c = np.tanh(cs[t + 1])
        dh = dh_out[t] + dh_next  # δh_t
        do = dh * tanh_c  # δo_t = δh_t ⊙ tanh(C_t)
        dc = dh * o * (1 - tanh_c**2) + dc_next  # δC_t = δh_t ⊙ o_t ⊙ tanh'(C_t) + δC_{t+1} ⊙ f_{t+1}
        df = dc * cs[t]  # δf_t = δC_t ⊙ C_{t−1}
        di = dc * c_tilde  # δi_t = δC_t ⊙ c̃_t
        dc_tilde = dc * i  # δc̃_t = δC_t ⊙ i_t
        dz = np.concatenate(  # through the activations: σ' = s(1 − s), tanh' = 1 − c̃²
            [di * i * (1 - i), df * f * (1 - f), dc_tilde * (1 - c_tilde**2), do * o * (1 - o)], axis=1
        )
        dw_x += dz.T @ x[t]  # δW_*x += δ*_pre x_tᵀ
        dw_h += dz.T @ hs[t]  # δW_*h += δ*_pre h_{t−1}ᵀ
        db += dz.sum(axis=0)  # δb_* += δ*_pre
        dx[t] = dz @ w_x  # Σ_* W_*xᵀ δ*_pre
        dh_next = dz @ w_h  # to h_{t−1}: Σ_* W_*hᵀ δ*_pre
        dc_next = dc * f  # to C_{t−1}: δC_t ⊙ f_t
    return dx, dw_x, dw_h, db, dh_next, dc_next


def softmax(logits: np.ndarray) -> np.ndarray:
    """Along the last axis, shifted by the maximum so that no exp overflows."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class LossCache(NamedTuple):
    """What loss_backward needs from loss_forward."""

    tokens: np.ndarray  # (T, B) input ids
    targets: np.ndarray  # (T, B) target ids
    scored: np.ndarray  # (T, B) 1 where the target counts, 0 at padding
    h_out: np.ndarray  # (T, B, H) h_t as the output layer reads it (after output dropout)
    keep: np.ndarray | float  # (T, B, H) output dropout's factors, or 1.0
    y: np.ndarray  # (T, B, V) softmax outputs
    lstm: LSTMCache


def loss_forward(params, tokens, targets, ignore_index: int, keep=None) -> tuple[np.ndarray, np.ndarray, LossCache]:
    """(B, T) tokens and targets → each row's summed NLL (B,), its scored targets (B,), the cache.

    E = −Σ_t log y_t[target_t] over the targets that are not ignore_index (padding). keep (B, T, H), when
    given, multiplies h_t before the output layer (output dropout: 0 or 1/(1 − p)).
    """
    emb, w_x, w_h, b, w_y, b_y = params
    tokens, targets = tokens.T, targets.T  # (T, B)
    B, H = tokens.shape[1], w_h.shape[1]
    zeros = np.zeros((B, H), dtype=emb.dtype)
    lstm = lstm_forward(emb[tokens], zeros, zeros, w_x, w_h, b)  # x_t = emb[token_t]
    keep = 1.0 if keep is None else keep.transpose(1, 0, 2)  # (T, B, H)
    h_out = lstm.hs[1:] * keep
    y = softmax(h_out @ w_y.T + b_y)  # (T, B, V): y_t = softmax(W_y h_t + b_y)
    scored = (targets != ignore_index).astype(emb.dtype)
    picked = np.take_along_axis(y, targets[..., None], axis=2)[..., 0]  # y_t[target_t]
    nll = -np.log(picked) * scored
    cache = LossCache(tokens, targets, scored, h_out, keep, y, lstm)
    return nll.sum(axis=0), scored.sum(axis=0).astype(np.int64), cache


def loss_backward(dnll, params, cache: LossCache) -> list[np.ndarray]:
    """dnll (B,), the upstream gradient of each row's NLL → the gradients of params, same order and shapes."""
    emb, w_x, w_h, b, w_y, b_y = params
    onehot = np.zeros_like(cache.y)
    np.put_along_axis(onehot, cache.targets[..., None], 1.0, axis=2)
    dlogits = (cache.y - onehot) * (cache.scored * dnll)[..., None]  # δ_t = y_t − onehot_t at the scored targets
    dw_y = np.einsum("tbv,tbh->vh", dlogits, cache.h_out)  # δW_y = Σ_t δ_t h_tᵀ
    db_y = dlogits.sum(axis=(0, 1))
    dh_out = (dlogits @ w_y) * cache.keep  # δh_t from the output layer: W_yᵀ δ_t (times dropout's factors)
    dx, dw_x, dw_h, db, _, _ = lstm_backward(dh_out, cache.lstm, w_x, w_h)
    demb = np.zeros_like(emb)
    np.add.at(demb, cache.tokens, dx)  # a character's embedding gets the gradient of every step that read it
    return [demb, dw_x, dw_h, db, dw_y, db_y]


def logits_forward(params, tokens, h0, c0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, T) tokens from the state h0, c0 (B, H) → logits (B, T, V) and the final h, C (sampling)."""
    emb, w_x, w_h, b, w_y, b_y = params
    lstm = lstm_forward(emb[tokens.T], h0, c0, w_x, w_h, b)
    logits = lstm.hs[1:] @ w_y.T + b_y  # (T, B, V)
    return logits.transpose(1, 0, 2), lstm.hs[-1], lstm.cs[-1]


class NumpyReference(NumpyModel):
    """This file's LSTM as a model: trains, samples and checkpoints like the others, only slower."""

    description = "the LSTM in plain NumPy, hand-written BPTT, written to be read (CPU, slow)"
    loss_forward = staticmethod(loss_forward)
    loss_backward = staticmethod(loss_backward)
    logits_forward = staticmethod(logits_forward)
