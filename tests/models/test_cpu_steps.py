"""torch-lstm's C steps (cpu_steps.py): the eager steps' results, the default for float32 on the CPU, built
once per machine, and the eager steps with a warning where no C can be built; numpy-lstm's exp2_rows."""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from poemctl.config import ModelConfig
from poemctl.models import cpu_steps, eager_steps
from poemctl.models.torch_lstm import Recurrence, TorchLSTM

EAGER = Recurrence(forward=eager_steps.forward_steps, backward=eager_steps.backward_steps)


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """library() forgets its build before and after the test; the build cache is the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cpu_steps.library.cache_clear()
    yield tmp_path / "xdg" / "poemctl"
    cpu_steps.library.cache_clear()


def _inputs(T, B, H, scale=1.0, seed=0):
    """Forward inputs (acts with c̃ doubled as LSTMScan passes them, W_hhᵀ, h0, C0) and output gradients."""
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(T, B, 4 * H, generator=g) * scale
    w_hh_t = torch.randn(H, 4 * H, generator=g) / H**0.5
    h0, c0 = torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    dhs = torch.randn(B, T, H, generator=g).transpose(0, 1)  # strided, as autograd hands it over
    return (acts, w_hh_t, h0, c0), (dhs, torch.randn(B, H, generator=g), torch.randn(B, H, generator=g))


@pytest.mark.parametrize(("T", "B", "H", "scale"), [(6, 3, 5, 1.0), (5, 64, 128, 1.0), (4, 2, 19, 60.0)])
def test_c_steps_give_the_eager_results(T, B, H, scale):
    # H = 5 and 19 leave a remainder after the vector loops; scale 60 saturates the gates (exp clamped)
    forward_in, grads = _inputs(T, B, H, scale)
    assert cpu_steps.library() is not None, "the C steps must build on this machine (a C compiler is required)"
    c = cpu_steps.forward_steps(forward_in[0].clone(), *forward_in[1:])
    eager = eager_steps.forward_steps(forward_in[0].clone(), *forward_in[1:])
    for name, x, y in zip(("activations", "C", "tanh C", "h"), c, eager, strict=True):
        assert torch.isfinite(x).all(), name
        torch.testing.assert_close(x, y, rtol=1e-5, atol=2e-6, msg=name)
    w_hh = forward_in[1].t()
    c_back = cpu_steps.backward_steps(*eager[:3], *grads, w_hh)
    eager_back = eager_steps.backward_steps(*eager[:3], *grads, w_hh)
    for name, x, y in zip(("δ pre-activations", "δh_0", "δC_0"), c_back, eager_back, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=name)


def test_float32_on_the_cpu_runs_the_c_steps_by_default(monkeypatch):
    lib = cpu_steps.library()
    calls = []

    class Counting:  # the library, counting its calls
        def __getattr__(self, name):
            fn = getattr(lib, name)
            return lambda *a: calls.append(name) or fn(*a)

    monkeypatch.setattr(cpu_steps, "library", lambda: Counting())
    torch.manual_seed(0)
    fast = TorchLSTM(ModelConfig(vocab_size=30, embedding=6, hidden=5))
    eager = TorchLSTM(fast.cfg)
    eager.load_state_dict(fast.state_dict())
    eager.recurrence = EAGER
    x, y = torch.randint(1, 30, (4, 7)), torch.randint(0, 30, (4, 7))
    outs = [m(x, targets=y, ignore_index=0) for m in (fast, eager)]
    for out in outs:
        out.nll.sum().backward()
    assert calls == ["forward_step"] * 7 + ["backward_step"] * 7
    torch.testing.assert_close(outs[0].nll, outs[1].nll, rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(fast.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    calls.clear()
    fast.double()(x, targets=y, ignore_index=0).nll.sum().backward()  # float64: the eager steps
    assert calls == []


def test_built_once_per_machine_and_source(fresh_build, monkeypatch):
    assert cpu_steps.library() is not None
    built = list(fresh_build.glob("cpu_steps-*.so"))
    assert len(built) == 1 and not list(fresh_build.glob("*.tmp"))
    assert fresh_build.stat().st_mode & 0o777 == 0o700  # nobody else can swap the library that gets loaded
    stamp = built[0].stat().st_mtime_ns
    cpu_steps.library.cache_clear()
    assert cpu_steps.library() is not None  # a new process: loads the build, does not redo it
    assert built[0].stat().st_mtime_ns == stamp
    # other flags (or source, compiler, CPU): another build
    monkeypatch.setattr(cpu_steps, "FLAGS", (*cpu_steps.FLAGS, "-DANOTHER_BUILD"))
    assert cpu_steps.library_path(cpu_steps.compiler()) != built[0]


def test_poemctl_no_c_steps_asks_for_the_eager_steps(fresh_build, monkeypatch):
    monkeypatch.setenv("POEMCTL_NO_C_STEPS", "1")
    forward_in, _ = _inputs(3, 2, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no warning
        out = cpu_steps.forward_steps(forward_in[0].clone(), *forward_in[1:])
    torch.testing.assert_close(out, eager_steps.forward_steps(forward_in[0].clone(), *forward_in[1:]), rtol=0, atol=0)
    assert not fresh_build.exists()  # nothing built


def test_cc_may_carry_options(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", "cc -DPOEMCTL_TEST")  # as build systems set it: a command with options
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_steps.library() is not None
    assert len(list(fresh_build.glob("cpu_steps-*.so"))) == 1


def _without_march_native(tmp_path, monkeypatch) -> None:
    """CC: a compiler that rejects -march=native, as some for ARM do (so the build has no AVX-512 here)."""
    cc = tmp_path / "cc-without-native"
    cc.write_text('#!/bin/sh\nfor a; do [ "$a" = -march=native ] && exit 1; done\nexec cc "$@"\n')
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))


def test_a_compiler_without_march_native_builds_without_it(fresh_build, monkeypatch, tmp_path):
    _without_march_native(tmp_path, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_steps.library() is not None
    forward_in, _ = _inputs(3, 2, 5)
    c = cpu_steps.forward_steps(forward_in[0].clone(), *forward_in[1:])
    torch.testing.assert_close(c[3], eager_steps.forward_steps(forward_in[0].clone(), *forward_in[1:])[3])


@pytest.mark.parametrize("native", [True, False], ids=["march-native", "portable"])
@pytest.mark.parametrize("cols", [1, 15, 16, 17, 40, 7496])  # around the 16-wide vectors; the course vocabulary
def test_exp2_rows_gives_exp2_and_row_sums(fresh_build, monkeypatch, tmp_path, native, cols):
    if not native:
        _without_march_native(tmp_path, monkeypatch)
    lib = cpu_steps.library()
    assert lib is not None, "the C must build on this machine (a C compiler is required)"
    rng = np.random.default_rng(cols)
    x = rng.uniform(-140.0, 140.0, (4, cols)).astype(np.float32)  # beyond float's range both ways
    x[(x > 127.0) & (x < 128.0)] = 130.0  # 2^127.x: finite or inf, as it falls in a vector or not
    x[0] = rng.uniform(-12.0, 6.0, cols)  # the logits of a trained model
    x[1, -1] = np.nan
    x[2, : min(cols, 4)] = [-126.5, -126.0, 127.0, 128.0][: min(cols, 4)]
    y, sums = x.copy(), np.full(4, -1.0, dtype=np.float32)
    lib.exp2_rows(y.ctypes.data, sums.ctypes.data, *y.shape)
    wide = x.astype(np.float64)
    want = np.where(wide > 127.0, np.inf, np.exp2(wide))  # and 0 or a subnormal below 2^-126
    np.testing.assert_allclose(y, want, rtol=3e-7, atol=2.0**-126)
    with np.errstate(over="ignore"):
        want_sums = want.sum(1).astype(np.float32)
    np.testing.assert_allclose(sums, want_sums, rtol=3e-5, atol=cols * 2.0**-126)  # float32 sums, in 16 lanes
    assert np.isnan(sums[1]) and np.isfinite(sums[0])


@pytest.mark.slow
def test_processes_building_at_once_share_one_build(tmp_path):
    # the processes of `accelerate launch` start with no build and each builds it: none may read a half-written one
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    code = "from poemctl.models import cpu_steps; assert cpu_steps.library() is not None"
    procs = [subprocess.Popen([sys.executable, "-W", "error", "-c", code], env=env) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert [p.name for p in (tmp_path / "poemctl").iterdir()] == [cpu_steps.library_path(cpu_steps.compiler()).name]


def test_threads_asking_at_once_share_one_build(fresh_build):
    # numpy-lstm's helper (the inputs) and its caller (the output layer) ask for the library at the same time
    barrier, got = threading.Barrier(3), []

    def ask():
        barrier.wait()
        got.append(cpu_steps.library())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(got) == 3 and all(lib is not None for lib in got), got
    assert len(list(fresh_build.glob("cpu_steps-*.so"))) == 1 and not list(fresh_build.glob("*.tmp"))


NO_BUILD = [("no-such-cc", "no C compiler 'no-such-cc'"), ("false", "exit status 1")]  # missing, failing


@pytest.mark.parametrize(("compiler", "why"), NO_BUILD)
def test_without_a_c_compiler_the_eager_steps_run_with_a_warning(fresh_build, monkeypatch, compiler, why):
    monkeypatch.setenv("CC", compiler)
    torch.manual_seed(0)
    m = TorchLSTM(ModelConfig(vocab_size=30, embedding=6, hidden=5))
    reference = TorchLSTM(m.cfg)
    reference.load_state_dict(m.state_dict())
    reference.recurrence = EAGER
    x = torch.randint(1, 30, (3, 6))
    with pytest.warns(UserWarning, match="run their slower eager steps") as caught:
        out = m(x).logits
    assert why in str(caught[0].message)
    torch.testing.assert_close(out, reference(x).logits, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        m(x)
    assert not list(fresh_build.glob("*"))


@pytest.mark.parametrize("damage", ["truncated", "random", "one-byte"])
def test_a_damaged_build_is_rebuilt_with_a_warning(fresh_build, damage):
    assert cpu_steps.library() is not None
    (path,) = fresh_build.glob("cpu_steps-*.so")
    data = path.read_bytes()
    broken = {
        "truncated": data[: len(data) // 2],
        "random": os.urandom(len(data)),
        "one-byte": data[:100] + bytes([data[100] ^ 1]) + data[101:],  # still an ELF file: dlopen would take it
    }[damage]
    other = path.with_name("damaged")  # a new file: this process has the old one mapped and may call into it
    other.write_bytes(broken)
    os.replace(other, path)
    cpu_steps.library.cache_clear()
    with pytest.warns(UserWarning, match="the cached C steps .* are damaged: rebuilding them"):
        lib = cpu_steps.library()
    assert lib is not None and cpu_steps.intact(path) and path.read_bytes() != broken
