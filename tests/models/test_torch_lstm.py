import torch
import torch.nn.functional as F

from poemctl.config import ModelConfig
from poemctl.gradcheck import gradcheck
from poemctl.models.torch_lstm import CudaGraphs, LSTMScan, Recurrence, TorchLSTM, input_projection

CFG = ModelConfig(vocab_size=30, embedding=6, hidden=5)


def _model(seed=0):
    torch.manual_seed(seed)
    return TorchLSTM(CFG).double()


def test_canonical_layout():
    shapes = {k: tuple(v.shape) for k, v in _model().state_dict().items()}
    assert shapes == {
        "embedding.weight": (30, 6),
        "lstm.weight_ih": (20, 6),
        "lstm.weight_hh": (20, 5),
        "lstm.bias": (20,),
        "output.weight": (30, 5),
        "output.bias": (30,),
    }


def test_init_is_random_not_zero():
    m = _model()
    for name, p in m.named_parameters():
        assert p.std() > 0, name
    rows = m.lstm.weight_hh.view(4, 5, 5)[0]
    assert not torch.allclose(rows[0], rows[1])  # hidden units differ: no symmetry


def test_matches_torch_nn_lstm():
    m = _model()
    ref = torch.nn.LSTM(6, 5, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(m.lstm.weight_ih)
        ref.weight_hh_l0.copy_(m.lstm.weight_hh)
        ref.bias_ih_l0.copy_(m.lstm.bias)
        ref.bias_hh_l0.zero_()
    tokens = torch.randint(0, 30, (3, 7))
    h, (hn, cn) = m.hidden_states(tokens, None)
    h_ref, (hn_ref, cn_ref) = ref(m.embedding(tokens))
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(cn, cn_ref[0])


def test_state_carries_across_calls():
    m = _model()
    tokens = torch.randint(0, 30, (2, 9))
    whole = m(tokens).logits
    first = m(tokens[:, :4])
    rest = m(tokens[:, 4:], state=first.state).logits
    torch.testing.assert_close(torch.cat([first.logits, rest], 1), whole)


def test_masked_nll_equals_full_cross_entropy():
    m = _model()
    tokens = torch.randint(1, 30, (4, 8))
    targets = torch.randint(1, 30, (4, 8))
    targets[:, :3] = 0  # padding targets
    out = m(tokens, targets=targets, ignore_index=0)
    logits = m(tokens).logits
    full = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=0, reduction="none").sum(1)
    torch.testing.assert_close(out.nll, full)
    assert out.count.tolist() == [5, 5, 5, 5]


def test_scan_backward_matches_finite_differences_with_a_starting_state():
    check_scan_gradients(Recurrence())


def check_scan_gradients(recurrence: Recurrence) -> None:
    """LSTMScan's backward, run as recurrence says, against finite differences (float64, a starting state)."""
    g = torch.Generator().manual_seed(0)
    T, B, H, U = 4, 3, 2, 5
    table = torch.randn(U, 4 * H, generator=g, dtype=torch.float64, requires_grad=True)
    where = torch.randint(0, U, (T, B), generator=g)
    w_hh = torch.randn(4 * H, H, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64, requires_grad=True)
    # every output is used: hs, and the final h and C (their gradients enter the last step)
    run = lambda *a: LSTMScan.apply(a[0], where, *a[1:], recurrence)  # noqa: E731
    assert torch.autograd.gradcheck(run, (table, w_hh, h0, c0))


def test_gradients_equal_the_autograd_reference():
    for check in gradcheck(TorchLSTM, seed=2):
        assert check.autograd_rel_error <= 1e-10, check
        assert check.finite_diff_rel_error <= 1e-4, check


def test_input_projection_once_per_distinct_character():
    m = _model()
    tokens = torch.tensor([[3, 3, 7], [7, 3, 9]])
    table, where = input_projection(tokens.t(), m.embedding.weight, m.lstm.weight_ih, m.lstm.bias)
    assert table.shape == (3, 20)  # characters 3, 7, 9
    expected = F.linear(m.embedding(tokens.t()), m.lstm.weight_ih, m.lstm.bias)
    torch.testing.assert_close(table[where], expected)


def test_trains_under_bf16_autocast():
    m = TorchLSTM(CFG)
    tokens = torch.randint(1, 30, (4, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(tokens, targets=tokens, ignore_index=0)
    out.nll.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.parameters())
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def _replay_on_cpu(fn, static):
    """Stands in for a CUDA-graph capture on the CPU: a replay recomputes fn on the graph's own inputs into
    the graph's own outputs, as a replayed graph does."""
    outputs = fn(*[t.clone() for t in static])

    def replay():
        for own, new in zip(outputs, fn(*static), strict=True):
            own.copy_(new)

    return replay, outputs


def test_graphed_recurrences_give_the_eager_losses_and_gradients(monkeypatch):
    captured = []

    def capture(fn, static):
        captured.append(fn)
        return _replay_on_cpu(fn, static)

    monkeypatch.setattr(CudaGraphs, "_capture", staticmethod(capture))
    eager, graphed = _model(), _model()
    graphed.use_cuda_graphs()
    g = torch.Generator().manual_seed(0)
    # two batches of one shape (the second replays the first's graphs; both forwards run before either
    # backward, so each must keep its own copies of the graphs' outputs), then a new shape (a new capture)
    for shapes in (((4, 7), (4, 7)), ((3, 9),)):
        batches = [(torch.randint(1, 30, s, generator=g), torch.randint(0, 30, s, generator=g)) for s in shapes]
        losses = []
        for m in (eager, graphed):
            m.zero_grad()
            losses.append([m(x, targets=y, ignore_index=0).nll for x, y in batches])
            sum(loss.sum() for loss in losses[-1]).backward()
        for a, b in zip(*losses, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for (name, p), q in zip(eager.named_parameters(), graphed.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)
    assert captured == [Recurrence.forward, Recurrence.backward] * 2  # the default step loops
