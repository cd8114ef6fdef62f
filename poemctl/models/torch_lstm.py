"""torch-lstm: SPEC.md's LSTM in PyTorch ops, with SPEC.md's backprop through time written by hand.

Autograd through a per-step cell records a dozen small nodes per step and replays them one by one; here
the whole recurrence is one autograd.Function (`LSTMScan`): the forward keeps the gate activations, and
the backward walks the steps once with the gradient equations of SPEC.md, leaving the weight gradients to
one large product over all steps. A character's input projection W_x x + b depends only on the character,
so it is computed once per distinct character of the batch (`input_projection`) rather than per position.
At the course size a step's kernels are small, so each step issues as few of them as it can (one sigmoid
for all four gates, per-step views made up front); on a GPU the two recurrences can be replayed from CUDA
graphs (`CudaGraphs`, `--cuda-graphs`) and a step's elementwise work fused into one Triton kernel
(triton_steps.py, `--fused-steps`). Everything runs on CPU or GPU. Tensors inside are time-major,
(T, B, …), so each step's slice is contiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from poemctl.models.base import PoemModel, State

_sigmoid_d = torch.ops.aten.sigmoid_backward.grad_input
_tanh_d = torch.ops.aten.tanh_backward


class LSTMScan(torch.autograd.Function):
    """table (U, 4H), where (T, B), W_hh (4H, H), h0 and C0 (B, H) → hs (T, B, H), h_T, C_T.

    Step t's gate pre-activations are table[where[t]] + W_hh h_{t−1}: the table holds W_x x + b of each
    distinct character, so the input projection is never computed twice for the same character. The two
    recurrences run as `recurrence` says (eagerly, fused, from CUDA graphs).
    """

    @staticmethod
    def forward(ctx, table, where, w_hh, h0, c0, recurrence: Recurrence):
        H = table.shape[1] // 4
        # tanh(z) = 2σ(2z) − 1: with the c̃ rows doubled, one sigmoid covers all four gates (one kernel,
        # which at B·4H ≥ 32768 entries also runs on every thread), then c̃ = 2s − 1 on its block.
        scale = table.new_ones(4 * H)
        scale[2 * H : 3 * H] = 2.0
        acts = F.embedding(where, table * scale)  # (T, B, 4H) input projections, turned into activations
        w_hh_t = (w_hh * scale[:, None]).t()
        acts, cs, tanh_cs, hs = recurrence.run(recurrence.forward, acts, w_hh_t, h0, c0)
        ctx.table_rows = table.shape[0]
        ctx.recurrence = recurrence
        ctx.save_for_backward(acts, cs, tanh_cs, hs, w_hh, where)
        T = where.shape[0]
        return hs[1:], hs[T].clone(), cs[T].clone()

    @staticmethod
    def backward(ctx, dhs, dh_last, dc_last):
        acts, cs, tanh_cs, hs, w_hh, where = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 4
        i, f, g, o = acts.split(H, dim=2)
        # Each gate's local factor, all steps at once, so a step only multiplies by δC_t or δh_t:
        # δi_pre = δC ⊙ c̃ ⊙ σ'(i),  δf_pre = δC ⊙ C_{t−1} ⊙ σ'(f),  δc̃_pre = δC ⊙ i ⊙ tanh'(c̃),
        # δo_pre = δh ⊙ tanh(C) ⊙ σ'(o). aten's sigmoid_backward(x, s) = x ⊙ s(1−s) and
        # tanh_backward(x, t) = x ⊙ (1−t²) compute SPEC.md's σ' and tanh' products in one pass each.
        local = torch.empty_like(acts)  # (T, B, 4H)
        _sigmoid_d(g, i, grad_input=local[..., :H])
        _sigmoid_d(cs[:-1], f, grad_input=local[..., H : 2 * H])
        _tanh_d(i, g, grad_input=local[..., 2 * H : 3 * H])
        _sigmoid_d(tanh_cs, o, grad_input=local[..., 3 * H :])
        dc_from_h = _tanh_d(o, tanh_cs)  # ∂C_t/∂h_t factor: o ⊙ tanh'(C_t)
        r = ctx.recurrence
        dpre, dh, dc = r.run(r.backward, local, dc_from_h, f, dhs, dh_last, dc_last, w_hh)
        flat = dpre.view(T * B, G)
        dtable = flat.new_zeros(ctx.table_rows, G).index_add_(0, where.view(-1), flat)  # Σ over each character's steps
        dw_hh = flat.t() @ hs[:-1].reshape(T * B, H)
        return dtable, None, dw_hh, dh, dc, None


def step_buffers(acts: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The forward recurrence's outputs for acts (T, B, 4H): C_0 … C_T (C_0 set), tanh(C_1 … C_T), h_0 … h_T."""
    T, B, G = acts.shape
    cs = acts.new_empty(T + 1, B, G // 4)
    hs = acts.new_empty(T + 1, B, G // 4)
    tanh_cs = acts.new_empty(T, B, G // 4)
    cs[0], hs[0] = c0, h0
    return cs, tanh_cs, hs


def _forward_steps(acts, w_hh_t, h0, c0) -> tuple[torch.Tensor, ...]:
    """The forward recurrence: acts (T, B, 4H) holds the input projections (c̃ rows doubled) and is turned
    into the gate activations in place; returns acts and C_0 … C_T, tanh(C_1 … C_T), h_0 … h_T."""
    H = acts.shape[2] // 4
    cs, tanh_cs, hs = step_buffers(acts, h0, c0)
    # per-step views, made once (a Python-level slice per step costs as much as a small kernel)
    i, f, g, o = acts.split(H, dim=2)
    steps = zip(acts, i, f, g, o, hs[:-1], cs[:-1], cs[1:], tanh_cs, hs[1:], strict=True)
    for a, i, f, g, o, h, c, c_new, tc, h_new in steps:
        a.addmm_(h, w_hh_t).sigmoid_()  # i, f, o and σ(2 z_c̃)
        g.mul_(2.0).sub_(1.0)  # c̃ = tanh(z_c̃)
        torch.mul(f, c, out=c_new).addcmul_(i, g)  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
        torch.tanh(c_new, out=tc)
        torch.mul(o, tc, out=h_new)  # h_t = o ⊙ tanh(C_t)
    return acts, cs, tanh_cs, hs


def _backward_steps(local, dc_from_h, f, dhs, dh_last, dc_last, w_hh) -> tuple[torch.Tensor, ...]:
    """The backward recurrence: local factors (T, B, 4H), ∂C/∂h (T, B, H), f (T, B, H) and the output
    gradients dhs (T, B, H) → pre-activation deltas (T, B, 4H), δh_0 and δC_0."""
    T, B, G = local.shape
    H = G // 4
    dpre = torch.empty_like(local)  # (T, B, 4H) pre-activation deltas
    dh = dhs[T - 1] + dh_last
    dc = dc_last  # δC flowing back from step t+1, times f_{t+1}
    # per-step views, made once: the i, f, c̃ blocks (driven by δC) as (B, 3, H), and o (driven by δh)
    ifg = local[..., : 3 * H].unflatten(2, (3, H)), dpre[..., : 3 * H].unflatten(2, (3, H))
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


@dataclass(frozen=True)
class Recurrence:
    """How LSTMScan runs its two recurrences: the step loops (eager or fused), called directly or replayed
    from CUDA graphs."""

    forward: Callable[..., tuple[torch.Tensor, ...]] = _forward_steps
    backward: Callable[..., tuple[torch.Tensor, ...]] = _backward_steps
    graphs: CudaGraphs | None = None

    def run(self, fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """fn(*inputs), from a CUDA graph when there are graphs."""
        return self.graphs.run(fn, *inputs) if self.graphs is not None else fn(*inputs)


class CudaGraphs:
    """The two recurrences replayed from CUDA graphs (`--cuda-graphs`), one capture per shape and dtype.

    At the course size a time step is a dozen kernels of a few microseconds each, so on a GPU the steps are
    bound by launching kernels from Python; a graph launches all of a recurrence's kernels at once. The
    inputs are copied into the graph's own tensors before each replay and the outputs copied out after it
    (the next replay overwrites them).
    """

    def __init__(self) -> None:
        self._graphs: dict = {}

    def run(self, fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """fn(*inputs), from the graph captured at the first call with these shapes and dtypes."""
        key = (fn, torch.is_autocast_enabled("cuda"), *((t.shape, t.stride(), t.dtype, t.device) for t in inputs))
        if key not in self._graphs:
            static = [t.clone() for t in inputs]
            self._graphs[key] = (*self._capture(fn, static), static)
        replay, outputs, static = self._graphs[key]
        for own, given in zip(static, inputs, strict=True):
            own.copy_(given)
        replay()
        return tuple(o.clone() for o in outputs)

    @staticmethod
    def _capture(fn, static: list[torch.Tensor]):
        """(replay, outputs) of a graph of fn on the static inputs."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(*[t.clone() for t in static])  # warm-up outside the capture (cuBLAS handles and workspaces)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # the backward's capture runs on autograd's device thread; other threads (NCCL's watchdog under
        # several GPUs) may query events meanwhile, which "global" mode would count against the capture
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = fn(*static)
        return graph.replay, outputs


def input_projection(tokens_t: torch.Tensor, embedding, w_ih, bias) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, B) ids → table (U, 4H) of W_x x + b for each distinct character, and where (T, B) indexes it."""
    chars, where = torch.unique(tokens_t, return_inverse=True)
    return F.linear(F.embedding(chars, embedding), w_ih, bias), where


class TorchLSTM(PoemModel):
    """The gate equations of SPEC.md in PyTorch ops, with SPEC.md's backward through time by hand."""

    description = "SPEC.md's LSTM in PyTorch ops with hand-written backprop through time (CPU or GPU)"
    recurrence = Recurrence()

    def use_cuda_graphs(self) -> None:
        """Replay the recurrences from CUDA graphs from now on (a model on a GPU; `--cuda-graphs`)."""
        self.recurrence = replace(self.recurrence, graphs=CudaGraphs())

    def use_fused_steps(self) -> None:
        """Run each time step's elementwise work as one Triton kernel from now on (a GPU; `--fused-steps`)."""
        from poemctl.models import triton_steps  # Triton is needed only here

        self.recurrence = replace(
            self.recurrence, forward=triton_steps.forward_steps, backward=triton_steps.backward_steps
        )

    def hidden_states(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """(B, T) ids → (B, T, H) hidden states (a time-major view) and the final (h, C)."""
        table, where = input_projection(tokens.t(), self.embedding.weight, self.lstm.weight_ih, self.lstm.bias)
        dt = table.dtype  # the autocast dtype under mixed precision
        h0, c0 = state if state is not None else self.zero_state(tokens.shape[0], tokens.device, dt)
        hs, h, c = LSTMScan.apply(table, where, self.lstm.weight_hh.to(dt), h0.to(dt), c0.to(dt), self.recurrence)
        return hs.transpose(0, 1), (h, c)
