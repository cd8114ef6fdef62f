import pytest
import torch
import torch.nn.functional as F

from poemctl.models.head import SoftmaxCrossEntropy


def _inputs(n=7, h=5, v=11, scale=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hs = (torch.randn(n, h, generator=g, dtype=dtype) * scale).requires_grad_()
    w = torch.randn(v, h, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(v, generator=g, dtype=dtype).requires_grad_()
    return hs, w, b, torch.randint(0, v, (n,), generator=g)


def _grads(loss_fn, hs, w, b, target, up):
    for t in (hs, w, b):
        t.grad = None
    nll = loss_fn(hs, w, b, target)
    (nll * up).sum().backward()
    return nll.detach(), [t.grad.clone() for t in (hs, w, b)]


def _reference(hs, w, b, target):
    return F.cross_entropy(F.linear(hs, w, b), target, reduction="none")


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [(1.0, torch.float64), (1000.0, torch.float64), (1.0, torch.float32), (12.0, torch.float32)],
)  # 1000: exp overflows; 12 (float32): logits up to 57, sums beyond 2⁶⁴; both take the stable path
def test_matches_autograd_cross_entropy(scale, dtype):
    hs, w, b, target = _inputs(scale=scale, dtype=dtype)
    up = torch.rand(len(target), dtype=dtype)  # a different upstream gradient per row
    nll, grads = _grads(SoftmaxCrossEntropy.apply, hs, w, b, target, up)
    ref_nll, ref_grads = _grads(_reference, hs, w, b, target, up)
    assert torch.isfinite(nll).all()
    torch.testing.assert_close(nll, ref_nll)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_bf16_autocast_close_to_float32():
    hs, w, b, target = _inputs(n=32, h=16, v=50, dtype=torch.float32)
    up = torch.ones(len(target))
    ref_nll, ref_grads = _grads(SoftmaxCrossEntropy.apply, hs, w, b, target, up)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll, grads = _grads(SoftmaxCrossEntropy.apply, hs, w, b, target, up)
    assert nll.dtype == torch.float32  # the softmax runs in float32, as under autocast's cross_entropy
    assert [g.dtype for g in grads] == [torch.float32] * 3
    torch.testing.assert_close(nll, ref_nll, rtol=0.05, atol=0.05)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0.1, atol=0.02)


def test_second_backward_is_refused():
    hs, w, b, target = _inputs()
    nll = SoftmaxCrossEntropy.apply(hs, w, b, target).sum()
    nll.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once per forward"):
        nll.backward()
