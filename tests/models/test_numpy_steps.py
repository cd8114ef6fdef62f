"""numpy-lstm's recurrences (numpy_steps.py): the packing, its states against a plain LSTM, and the C steps
against the NumPy steps."""

import numpy as np

from poemctl.models import cpu_steps, numpy_packing, numpy_steps

PAD = 0


def _batch():
    """(T, B) = (7, 5) inputs and scored targets, time-major: rows padded in front by 0, 3, 5, 2 and 7 (all)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 9, (5, 7))
    scored = np.ones((5, 7), dtype=bool)
    for row, pads in enumerate((0, 3, 5, 2, 7)):
        tokens[row, :pads] = PAD
        scored[row, : max(pads - 1, 0)] = False  # the last padding step predicts the poem's first character
    scored[4] = False  # padding only: nothing scored, never computed
    return tokens.T, scored.T


def test_packing_computes_a_row_from_its_first_scored_target_on():
    tokens_t, scored = _batch()
    packing = numpy_packing.pack(tokens_t, scored)
    assert packing.lead == PAD and packing.shared == 1
    # rows start at 0, 2, 4 and 1 (one step before their poem: that step's target is scored); row 4 never
    assert packing.order.tolist() == [0, 3, 1, 2, 4]
    assert packing.active.tolist() == [1, 2, 3, 3, 4, 4, 4]
    assert packing.offsets.tolist() == [0, 2, 5, 9, 13, 18, 23, 28]  # blocks of 1 + active rows
    assert packing.tokens(tokens_t)[packing.block(1)].tolist() == [PAD, tokens_t[1, 0], tokens_t[1, 3]]
    steps, at, rows = packing.positions(scored)
    assert len(at) == scored.sum() and (np.diff(steps) >= 0).all()
    assert all(packing.block(t).start < a < packing.block(t).stop for t, a in zip(steps, at, strict=True))


def test_without_scored_targets_every_row_starts_at_step_0():
    packing = numpy_packing.pack(_batch()[0])
    assert packing.shared == 0 and packing.active.tolist() == [5] * 7 and packing.rows == 35


def _reference(tokens_t, table, w_hh):
    """A plain LSTM over every row and step from the zero state: (T, B, H) hidden states."""
    T, B = tokens_t.shape
    H = w_hh.shape[1]
    h, c, hs = np.zeros((B, H)), np.zeros((B, H)), []
    for t in range(T):
        z = table[tokens_t[t]] + h @ w_hh.T
        i, f, g, o = (z[:, k * H : (k + 1) * H] for k in range(4))
        sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        hs.append(h)
    return np.stack(hs)


def _forward(dtype, H=6, seed=1):
    tokens_t, scored = _batch()
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((9, 4 * H)).astype(dtype)  # W_x x + b of each character
    w_hh = (rng.standard_normal((4 * H, H)) / H**0.5).astype(dtype)
    packing = numpy_packing.pack(tokens_t, scored)
    cache = numpy_steps.allocate(packing, w_hh)
    zeros = np.zeros((tokens_t.shape[1], H), dtype=dtype)
    numpy_steps.lstm_inputs(cache, table, packing.tokens(tokens_t))
    numpy_steps.lstm_forward(cache, zeros, zeros)
    return tokens_t, table, cache


def test_packed_states_are_those_of_a_plain_lstm(monkeypatch):
    monkeypatch.setattr(numpy_steps.cpu_steps, "library", lambda: None)  # the NumPy steps
    tokens_t, table, cache = _forward(np.float64)
    ref = _reference(tokens_t, table, cache.w_hh)
    p = cache.packing
    for t in range(tokens_t.shape[0]):
        out = cache.hs[cache.outputs(t)]
        for k, row in enumerate(p.order[: p.active[t]]):
            np.testing.assert_allclose(out[p.shared + k], ref[t, row], rtol=1e-12, atol=1e-12)
        for row in p.order[p.active[t] :]:  # not yet begun: the shared row's states are theirs
            np.testing.assert_allclose(out[0], ref[t, row], rtol=1e-12, atol=1e-12)


def test_c_steps_give_the_numpy_steps_results(monkeypatch):
    assert cpu_steps.library() is not None, "the C steps must build on this machine (a C compiler is required)"
    assert isinstance(numpy_steps.steps_for(_forward(np.float32)[2]), numpy_steps._CSteps)
    c = _forward(np.float32)[2]
    dh = np.random.default_rng(2).standard_normal((c.packing.rows, c.hs.shape[1])).astype(np.float32)
    c_back = numpy_steps.lstm_backward(dh.copy(), c)
    monkeypatch.setattr(numpy_steps.cpu_steps, "library", lambda: None)
    assert isinstance(numpy_steps.steps_for(c), numpy_steps._NumpySteps)
    eager = _forward(np.float32)[2]
    for name in ("acts", "cs", "tanh_cs", "hs"):
        np.testing.assert_allclose(getattr(c, name), getattr(eager, name), rtol=1e-5, atol=2e-6, err_msg=name)
    for name, x, y in zip(("δ pre-activations", "dW_hh"), c_back, numpy_steps.lstm_backward(dh, eager), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=name)


def test_float64_takes_the_numpy_steps():
    assert isinstance(numpy_steps.steps_for(_forward(np.float64)[2]), numpy_steps._NumpySteps)


def test_the_shared_row_gets_the_gradients_of_the_rows_that_left_it():
    # rows with the same tokens, one begun late: their gradients through the shared chain add up exactly
    tokens_t = np.array([[0, 0], [0, 0], [3, 0], [4, 5]])  # (T, B) = (4, 2)
    scored = np.array([[True, False], [True, False], [True, True], [True, True]])
    H = 3
    rng = np.random.default_rng(3)
    table = rng.standard_normal((6, 4 * H))
    w_hh = rng.standard_normal((4 * H, H)) / 2
    dh_rows = rng.standard_normal((4, 2, H))
    results = []
    for scored_here in (scored, None):  # packed with a shared row, then every row computed from step 0
        packing = numpy_packing.pack(tokens_t, scored_here)
        cache = numpy_steps.allocate(packing, w_hh)
        zeros = np.zeros((2, H))
        numpy_steps.lstm_inputs(cache, table, packing.tokens(tokens_t))
        numpy_steps.lstm_forward(cache, zeros, zeros)
        steps, at, rows = packing.positions(scored)
        dh = np.zeros((packing.rows, H))
        dh[at] = dh_rows[steps, rows]
        results.append(numpy_steps.lstm_backward(dh, cache)[1])
    assert numpy_packing.pack(tokens_t, scored).shared == 1
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-12)


def test_a_batch_without_padding_needs_no_shared_row():
    tokens_t = np.arange(1, 13).reshape(4, 3)
    packing = numpy_packing.pack(tokens_t, np.ones((4, 3), dtype=bool))
    assert packing.shared == 0 and packing.rows == 12
