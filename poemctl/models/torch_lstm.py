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
        B = tokens.shape[0]
        x = self.embedding(tokens)  # (B, T, E)
        # Input projection of every step in one product: (B, T, 4H).
        xw = F.linear(x, self.lstm.weight_ih, self.lstm.bias)
        h, c = state if state is not None else self.zero_state(B, tokens.device, xw.dtype)
        w_hh_t = self.lstm.weight_hh.t()  # (H, 4H)
        hs = []
        # unbind: one autograd node for all steps (indexing xw[:, t] would add a full-size gradient per step)
        for xw_t in xw.unbind(1):
            gates = torch.addmm(xw_t, h, w_hh_t)  # (B, 4H): i, f, g, o
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))  # C_t = f ⊙ C_{t−1} + i ⊙ c̃
            h = torch.sigmoid(o) * torch.tanh(c)  # h_t = o ⊙ tanh(C_t)
            hs.append(h)
        return torch.stack(hs, dim=1), (h, c)
