"""cudnn-lstm: the reference, torch.nn.LSTM (cuDNN on a GPU) run on the canonical parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from poemctl.config import ModelConfig
from poemctl.models.base import PoemModel, State


class CudnnLSTM(PoemModel):
    """torch.nn.LSTM (cuDNN on a GPU) over the canonical tensors: the speed reference and fast scorer."""

    description = "reference: torch.nn.LSTM (cuDNN on GPU) over the canonical parameters"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        # A parameter-free shell: its weights are supplied on each call from the canonical tensors.
        self._shell = [nn.LSTM(cfg.embedding, cfg.hidden, batch_first=True)]  # a list: not a submodule
        self.register_buffer("_zero_bias", torch.zeros(4 * cfg.hidden), persistent=False)

    def hidden_states(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """(B, T) ids → (B, T, H) hidden states through torch.nn.LSTM."""
        x = F.embedding(tokens, self.embedding_weight())
        weights = {
            "weight_ih_l0": self.lstm.weight_ih,
            "weight_hh_l0": self.lstm.weight_hh,
            "bias_ih_l0": self.lstm.bias,
            "bias_hh_l0": self._zero_bias.to(x.dtype),  # the canonical layout has one bias
        }
        hx = None if state is None else (state[0].unsqueeze(0), state[1].unsqueeze(0))
        shell = self._shell[0].to(x.device)
        h, (hn, cn) = functional_call(shell, weights, (x, hx))
        return h, (hn[0], cn[0])
