"""torch-lstm: SPEC.md's LSTM written out in PyTorch ops, gradients by autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from poemctl.models.base import PoemModel, State


class TorchLSTM(PoemModel):
    """The gate equations of SPEC.md in PyTorch, trained with autograd."""

    description = "SPEC.md's LSTM written out in PyTorch; gradients by autograd"

    def hidden_states(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """(B, T) ids → (B, T, H) hidden states, one time step at a time."""
        B, T = tokens.shape
        H = self.cfg.hidden
        x = self.embedding(tokens)  # (B, T, E)
        # Input projection of every step in one product: (B, T, 4H).
        xw = F.linear(x, self.lstm.weight_ih, self.lstm.bias)
        h, c = state if state is not None else self.zero_state(B, tokens.device, xw.dtype)
        w_hh_t = self.lstm.weight_hh.t()  # (H, 4H)
        hs = []
        for t in range(T):
            gates = torch.addmm(xw[:, t], h, w_hh_t)  # (B, 4H): i, f, g, o
            # One sigmoid over all four blocks (g's is unused) costs less than three sliced calls.
            act = torch.sigmoid(gates)
            i, f, o = act[:, :H], act[:, H : 2 * H], act[:, 3 * H :]
            g = torch.tanh(gates[:, 2 * H : 3 * H])
            c = torch.addcmul(f * c, i, g)  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
            h = o * torch.tanh(c)
            hs.append(h)
        return torch.stack(hs, dim=1), (h, c)
