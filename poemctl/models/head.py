"""The output layer and cross-entropy of docs/model.md in one autograd.Function, with a hand-written backward.

The output layer is most of a training step (N scored positions × V ≈ 7,500 characters). Written with
F.linear + F.cross_entropy, autograd spends more time on full N×V passes (bias broadcast, log-softmax
forward and backward, a zero-filled one-hot gradient, the bias sum) than on the matrix products. Here the
only N×V passes are the product, exp and the row sums; the backward reuses the exponentials in place
(docs/model.md's δ = y − onehot, up to each row's sum), and folds each row's 1/sum and upstream gradient into
the small (N, H) side of the products.
"""

from __future__ import annotations

import torch

FAST_SUMS = (2.0**-100, 2.0**64)  # the row sums of exp(logits) the fast path (no max subtraction) accepts


def _compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the output layer's products: autocast's, when it is on (as Accelerate's mixed precision)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return dtype


class SoftmaxCrossEntropy(torch.autograd.Function):
    """h (N, H), W_y (V, H), b_y (V,), targets (N,) → −log softmax(W_y h + b_y)[target], shape (N,)."""

    @staticmethod
    def forward(ctx, h, weight, bias, target):
        mm_dtype = _compute_dtype(h.device, weight.dtype)
        soft_dtype = torch.promote_types(mm_dtype, torch.float32)  # softmax in float32 at least, as autocast does
        with torch.autocast(h.device.type, enabled=False):
            h_, w_ = h.to(mm_dtype), weight.to(mm_dtype)

            def logits() -> torch.Tensor:  # (N, V)
                return torch.mm(h_, w_.t()).to(soft_dtype).add_(bias.to(soft_dtype))

            exps = logits()
            picked = exps.gather(1, target[:, None])[:, 0]  # (N,) the target's logit
            # No max-subtraction pass unless a row's sum leaves [2⁻¹⁰⁰, 2⁶⁴] (logits beyond about ±44, never
            # seen in training: trained models stay below 20); inside it the backward's 1/sum stays normal.
            exps.exp_()
            sums = exps.sum(1)
            if not bool(((sums >= FAST_SUMS[0]) & (sums <= FAST_SUMS[1])).all()):
                exps = logits()  # the exponentials overwrote the first ones
                shift = exps.amax(1)
                exps -= shift[:, None]
                exps.exp_()
                sums = exps.sum(1)
            else:
                shift = 0.0
        ctx.exps, ctx.sums = exps, sums  # the softmax is exps / sums; the division is left to the backward
        ctx.save_for_backward(h_, w_, target)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype)
        return sums.log() + shift - picked  # log Σ exp(logits) − logit[target]

    @staticmethod
    def backward(ctx, dnll):
        h, w, target = ctx.saved_tensors
        if ctx.exps is None:
            raise RuntimeError("SoftmaxCrossEntropy reuses its softmax in place: backward runs once per forward")
        exps, sums, ctx.exps = ctx.exps, ctx.sums, None
        # δ = y − onehot (docs/model.md) with y = exps / sums: subtract sums at the targets in place, and leave the
        # division (with each row's upstream gradient) to the small (N, H) side of the products.
        exps[torch.arange(len(target), device=target.device), target] -= sums
        scale = (dnll.to(sums.dtype) / sums)[:, None]  # (N, 1)
        d, s = exps.to(h.dtype), scale.to(h.dtype)
        dh = (d @ w) * s  # (N, H) = W_yᵀ(y − onehot), times the upstream gradient
        dw = d.t() @ (h * s)  # (V, H)
        db = exps.t() @ scale[:, 0]  # (V,)
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return dh.to(h_dtype), dw.to(w_dtype), db.to(b_dtype), None
