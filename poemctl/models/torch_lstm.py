"""torch-lstm: the LSTM in PyTorch ops, with the backprop through time of docs/model.md written by hand.

Autograd through a per-step cell records a dozen small nodes per step and replays them one by one; here
the whole recurrence is one autograd.Function (`LSTMScan`): the forward keeps the gate activations, and
the backward walks the steps once with the gradient equations of docs/model.md, leaving the weight gradients to
one large product over all steps. A character's input projection W_x x + b depends only on the character,
so it is computed once per distinct character of the batch (`input_projection`) rather than per position.
The step loops themselves live beside this file: eager_steps.py (plain PyTorch calls, any device and
dtype), cpu_steps.py (a step's elementwise work in one C call; the default, for float32 on the CPU) and
triton_steps.py (one Triton kernel a step on a GPU, `--fused-steps`); on a GPU the loops can also be
replayed from CUDA graphs (`CudaGraphs`, `--cuda-graphs`). Tensors inside are time-major, (T, B, …), so
each step's slice is contiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from poemctl.models import cpu_steps
from poemctl.models.base import PoemModel, State
from poemctl.models.gates import gate_scale


class LSTMScan(torch.autograd.Function):
    """table (U, 4H), where (T, B), W_hh (4H, H), h0 and C0 (B, H) → hs (T, B, H), h_T, C_T.

    Step t's gate pre-activations are table[where[t]] + W_hh h_{t−1}: the table holds W_x x + b of each
    distinct character, so the input projection is never computed twice for the same character. The two
    recurrences run as `recurrence` says (eagerly, fused, from CUDA graphs).
    """

    @staticmethod
    def forward(ctx, table, where, w_hh, h0, c0, recurrence: Recurrence):
        H = table.shape[1] // 4
        # c̃'s rows doubled (gates.py): one sigmoid covers all four gates (in the eager steps one kernel, which
        # at B·4H ≥ 32768 entries also runs on every thread), then c̃ = 2s − 1
        scale = torch.from_numpy(gate_scale(H)).to(table)
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
        r = ctx.recurrence
        dpre, dh, dc = r.run(r.backward, acts, cs, tanh_cs, dhs, dh_last, dc_last, w_hh)
        flat = dpre.view(T * B, G)
        dtable = flat.new_zeros(ctx.table_rows, G).index_add_(0, where.view(-1), flat)  # Σ over each character's steps
        dw_hh = flat.t() @ hs[:-1].reshape(T * B, G // 4)
        return dtable, None, dw_hh, dh, dc, None


@dataclass(frozen=True)
class Recurrence:
    """How LSTMScan runs its two recurrences: the step loops (by default the C ones for float32 on the CPU,
    the eager ones otherwise; or the Triton ones), called directly or replayed from CUDA graphs."""

    forward: Callable[..., tuple[torch.Tensor, ...]] = cpu_steps.forward_steps
    backward: Callable[..., tuple[torch.Tensor, ...]] = cpu_steps.backward_steps
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
    """The gate equations in PyTorch ops, with docs/model.md's backward through time by hand."""

    description = "the LSTM in PyTorch ops, hand-written backprop through time; CPU (gates in C) or GPU"
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
        table, where = input_projection(tokens.t(), self.embedding_weight(), self.lstm.weight_ih, self.lstm.bias)
        dt = table.dtype  # the autocast dtype under mixed precision
        h0, c0 = state if state is not None else self.zero_state(tokens.shape[0], tokens.device, dt)
        hs, h, c = LSTMScan.apply(table, where, self.lstm.weight_hh.to(dt), h0.to(dt), c0.to(dt), self.recurrence)
        return hs.transpose(0, 1), (h, c)
