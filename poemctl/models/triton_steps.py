"""torch-lstm's two recurrences with each time step's elementwise work in one Triton kernel (`--fused-steps`).

On a GPU a time step of the eager recurrences is a matrix product and seven small elementwise kernels
forward (four backward, after passes over all steps for the local factors), each a launch and a pass over
the step's tensors; here it is the product and one kernel, which also computes the backward's local
factors. Same arguments, results and gate equations (docs/model.md) as eager_steps.py's functions, which they
replace; with TRITON_INTERPRET=1 the kernels also run on the CPU (the tests). cpu_steps.c is the CPU twin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from poemctl.models.eager_steps import step_buffers

_BLOCK = 256  # (b, j) entries per program: a batch of 64 × 128 hidden units spreads over 32 programs


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _forward_cell(a, c, c_new, tanh_c, h_new, B, H, ROWS: tl.constexpr, COLS: tl.constexpr, ACC: tl.constexpr):
    """One step over (B, H): a (B, 4H) holds the gates' pre-activations (c̃'s doubled) and gets i, f, c̃, o."""
    b = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]  # (ROWS, 1) batch rows
    j = tl.arange(0, COLS)[None, :]  # (1, COLS) hidden units: contiguous, so loads and stores are vectors
    m = (b < B) & (j < H)
    k = b * H + j  # entry of a (B, H) tensor
    at = b * 4 * H + j  # gate i's entry in a's row; f, c̃, o follow H apart
    i = _sigmoid(tl.load(a + at, mask=m).to(ACC))
    f = _sigmoid(tl.load(a + at + H, mask=m).to(ACC))
    g = 2.0 * _sigmoid(tl.load(a + at + 2 * H, mask=m).to(ACC)) - 1.0  # c̃ = tanh(z) = 2σ(2z) − 1
    o = _sigmoid(tl.load(a + at + 3 * H, mask=m).to(ACC))
    c_t = f * tl.load(c + k, mask=m).to(ACC) + i * g  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
    tc = 2.0 * _sigmoid(2.0 * c_t) - 1.0
    tl.store(a + at, i, mask=m)
    tl.store(a + at + H, f, mask=m)
    tl.store(a + at + 2 * H, g, mask=m)
    tl.store(a + at + 3 * H, o, mask=m)
    tl.store(c_new + k, c_t, mask=m)
    tl.store(tanh_c + k, tc, mask=m)
    tl.store(h_new + k, o * tc, mask=m)  # h_t = o ⊙ tanh(C_t)


@triton.jit
def _backward_cell(
    a, c_prev, tanh_c, dh, dc_in, d, dc_out, B, H, ROWS: tl.constexpr, COLS: tl.constexpr, ACC: tl.constexpr
):
    """One step over (B, H): δC_t from δh_t and δC_{t+1} ⊙ f_{t+1}, then the four pre-activation deltas d,
    each gate's local factor computed here from the step's activations a (B, 4H), C_{t−1} and tanh(C_t)."""
    b = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]
    j = tl.arange(0, COLS)[None, :]
    m = (b < B) & (j < H)
    k = b * H + j
    at = b * 4 * H + j
    i = tl.load(a + at, mask=m).to(ACC)
    f = tl.load(a + at + H, mask=m).to(ACC)
    g = tl.load(a + at + 2 * H, mask=m).to(ACC)
    o = tl.load(a + at + 3 * H, mask=m).to(ACC)
    tc = tl.load(tanh_c + k, mask=m).to(ACC)
    dh_t = tl.load(dh + k, mask=m).to(ACC)
    dc = tl.load(dc_in + k, mask=m).to(ACC) + dh_t * o * (1.0 - tc * tc)  # δC_t
    tl.store(d + at, dc * g * i * (1.0 - i), mask=m)  # δi_pre = δC ⊙ c̃ ⊙ σ'(i)
    tl.store(d + at + H, dc * tl.load(c_prev + k, mask=m).to(ACC) * f * (1.0 - f), mask=m)  # δf_pre
    tl.store(d + at + 2 * H, dc * i * (1.0 - g * g), mask=m)  # δc̃_pre = δC ⊙ i ⊙ tanh'(c̃)
    tl.store(d + at + 3 * H, dh_t * tc * o * (1.0 - o), mask=m)  # δo_pre = δh ⊙ tanh(C) ⊙ σ'(o)
    tl.store(dc_out + k, dc * f, mask=m)  # on to C_{t−1} through f_t


def _launch(kernel, x: torch.Tensor, *args: torch.Tensor) -> None:
    """kernel over the (B, H) entries of x's step, in float64 for float64 tensors and float32 otherwise."""
    B, H = x.shape
    cols = triton.next_power_of_2(H)
    rows = max(1, _BLOCK // cols)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    kernel[(triton.cdiv(B, rows),)](*args, B, H, ROWS=rows, COLS=cols, ACC=acc)


def forward_steps(acts, w_hh_t, h0, c0) -> tuple[torch.Tensor, ...]:
    """eager_steps.forward_steps with one fused kernel per step after the recurrent product."""
    cs, tanh_cs, hs = step_buffers(acts, h0, c0)
    for t in range(acts.shape[0]):
        a = acts[t].addmm_(hs[t], w_hh_t)
        _launch(_forward_cell, hs[t], a, cs[t], cs[t + 1], tanh_cs[t], hs[t + 1])
    return acts, cs, tanh_cs, hs


def backward_steps(acts, cs, tanh_cs, dhs, dh_last, dc_last, w_hh) -> tuple[torch.Tensor, ...]:
    """eager_steps.backward_steps with one fused kernel per step before the recurrent product (acts, cs and
    tanh_cs contiguous, as the forward makes them)."""
    T = acts.shape[0]
    dpre = torch.empty_like(acts)  # (T, B, 4H)
    dh = dhs[T - 1] + dh_last  # (B, H), contiguous
    dcs = dh.new_empty((2, *dh.shape))  # δC flowing in from step t+1 and out to t−1, taking turns
    dcs[0] = dc_last
    for t in reversed(range(T)):
        dc_in, dc_out = dcs[(T - 1 - t) % 2], dcs[(T - t) % 2]
        _launch(_backward_cell, dh, acts[t], cs[t], tanh_cs[t], dh, dc_in, dpre[t], dc_out)
        dh = torch.addmm(dhs[t - 1], dpre[t], w_hh) if t > 0 else dpre[t] @ w_hh
    return dpre, dh, dcs[T % 2]
