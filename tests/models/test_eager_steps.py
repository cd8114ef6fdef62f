"""torch-lstm's eager step loops: the reference the C and Triton steps are tested against."""

import torch

from poemctl.models import eager_steps
from poemctl.models.torch_lstm import Recurrence
from tests.models.test_torch_lstm import check_scan_gradients


def test_eager_scan_matches_finite_differences_with_a_starting_state():
    check_scan_gradients(Recurrence(forward=eager_steps.forward_steps, backward=eager_steps.backward_steps))


def test_forward_follows_the_gate_equations_in_place():
    g = torch.Generator().manual_seed(0)
    T, B, H = 3, 2, 4
    z = torch.randn(T, B, 4 * H, generator=g, dtype=torch.float64)  # pre-activations without W_hh h
    w_hh_t = torch.randn(H, 4 * H, generator=g, dtype=torch.float64)
    h, c = torch.randn(B, H, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64)
    doubled = z.clone()
    doubled[..., 2 * H : 3 * H] *= 2  # c̃'s block doubled, as LSTMScan passes it (with W_hh's c̃ rows doubled)
    w_doubled = w_hh_t.clone()
    w_doubled[:, 2 * H : 3 * H] *= 2
    acts, cs, tanh_cs, hs = eager_steps.forward_steps(doubled, w_doubled, h, c)
    assert acts is doubled  # turned into the activations in place
    for t in range(T):  # docs/model.md, one step at a time
        i, f, g_, o = (z[t] + h @ w_hh_t).split(H, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g_)
        h = torch.sigmoid(o) * torch.tanh(c)
        torch.testing.assert_close(cs[t + 1], c)
        torch.testing.assert_close(tanh_cs[t], torch.tanh(c))
        torch.testing.assert_close(hs[t + 1], h)
        torch.testing.assert_close(acts[t, :, 2 * H : 3 * H], torch.tanh(g_))
