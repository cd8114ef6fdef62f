"""torch-lstm's two recurrences as plain PyTorch calls: the reference every faster variant is tested against.

Time-major tensors, so each step's slice is contiguous: acts (T, B, 4H) with the gate blocks i, f, c̃, o;
C_0 … C_T and h_0 … h_T (T+1, B, H); tanh(C_1 … C_T) (T, B, H). At the course size a step's kernels are
small, so each step issues as few calls as it can: one sigmoid for all four gates, per-step views made once
(a Python-level slice per step costs as much as a small kernel). The fused variants (cpu_steps.py,
triton_steps.py) take the same arguments and return the same results.
"""

from __future__ import annotations

import torch

_sigmoid_d = torch.ops.aten.sigmoid_backward.grad_input
_tanh_d = torch.ops.aten.tanh_backward


def step_buffers(acts: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The forward recurrence's outputs for acts (T, B, 4H): C_0 … C_T (C_0 set), tanh(C_1 … C_T), h_0 … h_T."""
    T, B, G = acts.shape
    cs = acts.new_empty(T + 1, B, G // 4)
    hs = acts.new_empty(T + 1, B, G // 4)
    tanh_cs = acts.new_empty(T, B, G // 4)
    cs[0], hs[0] = c0, h0
    return cs, tanh_cs, hs


def forward_steps(acts, w_hh_t, h0, c0) -> tuple[torch.Tensor, ...]:
    """The forward recurrence: acts (T, B, 4H) holds the input projections (c̃ rows doubled) and is turned
    into the gate activations in place; returns acts and C_0 … C_T, tanh(C_1 … C_T), h_0 … h_T."""
    H = acts.shape[2] // 4
    cs, tanh_cs, hs = step_buffers(acts, h0, c0)
    i, f, g, o = acts.split(H, dim=2)
    steps = zip(acts, i, f, g, o, hs[:-1], cs[:-1], cs[1:], tanh_cs, hs[1:], strict=True)
    for a, i, f, g, o, h, c, c_new, tc, h_new in steps:
        a.addmm_(h, w_hh_t).sigmoid_()  # i, f, o and σ(2 z_c̃)
        g.mul_(2.0).sub_(1.0)  # c̃ = tanh(z_c̃) = 2σ(2 z_c̃) − 1
        torch.mul(f, c, out=c_new).addcmul_(i, g)  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
        torch.tanh(c_new, out=tc)
        torch.mul(o, tc, out=h_new)  # h_t = o ⊙ tanh(C_t)
    return acts, cs, tanh_cs, hs


def local_factors(acts, cs, tanh_cs) -> tuple[torch.Tensor, torch.Tensor]:
    """Each gate's local factor for all steps at once, (T, B, 4H), and ∂C_t/∂h_t's factor o ⊙ tanh'(C_t), (T, B, H).

    δi_pre = δC ⊙ c̃ ⊙ σ'(i),  δf_pre = δC ⊙ C_{t−1} ⊙ σ'(f),  δc̃_pre = δC ⊙ i ⊙ tanh'(c̃),
    δo_pre = δh ⊙ tanh(C) ⊙ σ'(o): a step then only multiplies by δC_t or δh_t. aten's sigmoid_backward(x, s)
    = x ⊙ s(1−s) and tanh_backward(x, t) = x ⊙ (1−t²) compute
    docs/model.md's σ' and tanh' products in one pass each.
    """
    H = acts.shape[2] // 4
    i, f, g, o = acts.split(H, dim=2)
    local = torch.empty_like(acts)
    _sigmoid_d(g, i, grad_input=local[..., :H])
    _sigmoid_d(cs[:-1], f, grad_input=local[..., H : 2 * H])
    _tanh_d(i, g, grad_input=local[..., 2 * H : 3 * H])
    _sigmoid_d(tanh_cs, o, grad_input=local[..., 3 * H :])
    return local, _tanh_d(o, tanh_cs)


def backward_steps(acts, cs, tanh_cs, dhs, dh_last, dc_last, w_hh) -> tuple[torch.Tensor, ...]:
    """The backward recurrence: the forward's activations (T, B, 4H), C_0 … C_T and tanh(C_1 … C_T), and the
    output gradients dhs (T, B, H), δh_T, δC_T → pre-activation deltas (T, B, 4H), δh_0 and δC_0."""
    T, B, G = acts.shape
    H = G // 4
    local, dc_from_h = local_factors(acts, cs, tanh_cs)
    dpre = torch.empty_like(acts)  # (T, B, 4H) pre-activation deltas
    dh = dhs[T - 1] + dh_last
    dc = dc_last  # δC flowing back from step t+1, times f_{t+1}
    # per-step views, made once: the i, f, c̃ blocks (driven by δC) as (B, 3, H), and o (driven by δh)
    ifg = local[..., : 3 * H].unflatten(2, (3, H)), dpre[..., : 3 * H].unflatten(2, (3, H))
    f = acts[..., H : 2 * H]
    views = list(zip(*ifg, local[..., 3 * H :], dpre[..., 3 * H :], dpre, dc_from_h, f, strict=True))
    for t in reversed(range(T)):
        l_ifg, d_ifg, l_o, d_o, d, k, f_t = views[t]
        dc = torch.addcmul(dc, dh, k)  # δC_t = δh ⊙ o ⊙ tanh'(C_t) + δC_{t+1} ⊙ f_{t+1}
        torch.mul(l_ifg, dc.unsqueeze(1), out=d_ifg)
        torch.mul(l_o, dh, out=d_o)
        # δh_{t−1}: the step's own output gradient plus Σ_* W_*hᵀ δ*_pre
        dh = torch.addmm(dhs[t - 1], d, w_hh) if t > 0 else d @ w_hh
        dc = dc * f_t
    return dpre, dh, dc
