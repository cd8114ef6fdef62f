"""The model contract and the one canonical parameter layout every poemctl model uses.

Canonical parameters (V: vocabulary, E: embedding, H: hidden; gate blocks stacked in the order
i, f, g=c̃, o, as torch.nn.LSTM does, each block H rows):

    embedding.weight  (V, E)    character embeddings x_t
    lstm.weight_ih    (4H, E)   [W_ix; W_fx; W_cx; W_ox]
    lstm.weight_hh    (4H, H)   [W_ih; W_fh; W_ch; W_oh]
    lstm.bias         (4H,)     [b_i; b_f; b_c; b_o]
    output.weight     (V, H)    W_y
    output.bias       (V,)      b_y

With tie_weights (E = H) output.weight and embedding.weight are one Parameter (Press & Wolf, 2017): each
character has one vector that is both what the LSTM reads and what h_t is scored against; autograd adds the
two gradients. A checkpoint still holds both names, so it loads into an untied model as well.

The parameters are created here, in the base class, so any checkpoint loads into any model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from poemctl.config import ModelConfig
from poemctl.models.head import SoftmaxCrossEntropy

State = tuple[torch.Tensor, torch.Tensor]  # (h, C), each (B, H)


class ModelOutput(NamedTuple):
    """What forward returns: logits without targets; per-row summed NLL and target counts with them."""

    logits: torch.Tensor | None  # (B, T, V), only when no targets were given
    state: State | None  # (h, C) after the last step
    nll: torch.Tensor | None  # (B,) summed cross-entropy over each row's scored targets
    count: torch.Tensor | None  # (B,) number of scored targets in each row


class LSTMParameters(nn.Module):
    """The gate weights of docs/model.md, packed i, f, g, o."""

    def __init__(self, embedding: int, hidden: int):
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden, embedding))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias = nn.Parameter(torch.empty(4 * hidden))


class PoemModel(nn.Module):
    """Base of every model: canonical parameters, random init, and forward with optional loss."""

    description = "a poemctl model"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding)
        self.lstm = LSTMParameters(cfg.embedding, cfg.hidden)
        self.output = nn.Linear(cfg.hidden, cfg.vocab_size)
        if cfg.tie_weights:
            self.output.weight = self.embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init, never zeros (zeros would make every hidden unit identical): U(±1/√H); embeddings N(0, 1),
        or U(±0.1) when tied (as the output layer, N(0, 1) rows would start with logits of size √H)."""
        bound = 1.0 / math.sqrt(self.cfg.hidden)
        nn.init.normal_(self.embedding.weight)
        for p in (*self.lstm.parameters(), *self.output.parameters()):
            if p is self.embedding.weight:  # tied
                nn.init.uniform_(p, -0.1, 0.1)
            else:
                nn.init.uniform_(p, -bound, bound)

    def hidden_states(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """(B, T) token ids → (B, T, H) hidden states h_t and the final (h, C); embeddings from embedding_weight()."""
        raise NotImplementedError

    def embedding_weight(self) -> torch.Tensor:
        """The embedding matrix (V, E) a forward reads, called once per forward. In training with embedding
        dropout p, each character's row is dropped with probability p, for all its positions in the batch,
        and the others are scaled by 1/(1 − p) (the embedding dropout of Merity et al.'s AWD-LSTM)."""
        w, p = self.embedding.weight, self.cfg.embedding_dropout
        if not (self.training and p):
            return w
        return w * w.new_empty(w.shape[0], 1).bernoulli_(1 - p).div_(1 - p)

    def output_keep(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """(B, T, H) factors for h_t before the output layer: 0 with probability p, else 1/(1 − p), in training
        with output dropout p; None otherwise. Drawn after embedding_weight(), so that every model draws the
        same masks from the same seed."""
        p = self.cfg.output_dropout
        if not (self.training and p):
            return None
        w = self.output.weight
        return w.new_empty(*tokens.shape, w.shape[1]).bernoulli_(1 - p).div_(1 - p)

    def forward(
        self,
        tokens: torch.Tensor,
        state: State | None = None,
        targets: torch.Tensor | None = None,
        ignore_index: int = -100,
    ) -> ModelOutput:
        """Logits for tokens (B, T), or with targets (B, T) the per-row NLL of those not ignore_index."""
        h, state = self.hidden_states(tokens, state)
        keep = self.output_keep(tokens)
        if keep is not None:
            h = h * keep.to(h.dtype)
        if targets is None:
            return ModelOutput(self.output(h), state, None, None)
        mask = targets != ignore_index
        # The output layer is most of the work: run it on scored positions only, padding costs nothing.
        nll = self.scored_nll(h[mask], targets[mask])  # (N,)
        rows = mask.nonzero()[:, 0]
        per_row = torch.zeros(tokens.shape[0], dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)
        return ModelOutput(None, state, per_row, mask.sum(1))

    def scored_nll(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Hidden states (N, H) at the scored positions and their targets (N,) → cross-entropy (N,)."""
        return SoftmaxCrossEntropy.apply(h, self.output.weight, self.output.bias, target)

    def zero_state(self, batch: int, device=None, dtype=None) -> State:
        """(h, C) of zeros for a batch."""
        z = torch.zeros(batch, self.cfg.hidden, device=device, dtype=dtype or self.output.weight.dtype)
        return z, z.clone()
