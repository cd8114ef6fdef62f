"""The output layer and cross-entropy of SPEC.md in one autograd.Function, with a hand-written backward.

The output layer is most of a training step (N scored positions × V ≈ 7,500 characters). Written with
F.linear + F.cross_entropy, autograd spends more time on full N×V passes (bias broadcast, log-softmax
forward and backward, a zero-filled one-hot gradient, the bias sum) than on the matrix products. Here the
only N×V passes are the product, exp, the row sums and the division; the backward reuses the softmax in
place (y − onehot, SPEC.md's δ), and folds each row's upstream gradient into the small (N, H) side.
"""

from __future__ import annotations

import torch


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
            logits = torch.mm(h_, w_.t()).to(soft_dtype)  # (N, V)
            logits += bias.to(soft_dtype)
            picked = logits.gather(1, target[:, None])[:, 0]  # (N,) the target's logit
            # No max-subtraction pass unless exp overflows or every entry of a row underflows.
            probs = logits.exp_()
            sums = probs.sum(1)
            if not bool(torch.isfinite(sums).all() and (sums > 0).all()):
                probs = torch.mm(h_, w_.t()).to(soft_dtype)
                probs += bias.to(soft_dtype)
                shift = probs.amax(1)
                probs -= shift[:, None]
                probs.exp_()
                sums = probs.sum(1)
            else:
                shift = 0.0
            probs *= sums.reciprocal()[:, None]
        ctx.probs = probs
        ctx.save_for_backward(h_, w_, target)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype)
        return sums.log() + shift - picked  # log Σ exp(logits) − logit[target]

    @staticmethod
    def backward(ctx, dnll):
        h, w, target = ctx.saved_tensors
        if ctx.probs is None:
            raise RuntimeError("SoftmaxCrossEntropy reuses its softmax in place: backward runs once per forward")
        dlogits, ctx.probs = ctx.probs, None  # (N, V) becomes y − onehot in place
        dlogits[torch.arange(len(target), device=target.device), target] -= 1.0
        up = dnll.to(dlogits.dtype)[:, None]  # (N, 1) each row's upstream gradient, applied on the small side
        d = dlogits.to(h.dtype)
        dh = (d @ w) * up.to(h.dtype)  # (N, H) = W_yᵀ(y − onehot), scaled
        dw = d.t() @ (h * up.to(h.dtype))  # (V, H)
        db = dlogits.t() @ up[:, 0]  # (V,)
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return dh.to(h_dtype), dw.to(w_dtype), db.to(b_dtype), None
