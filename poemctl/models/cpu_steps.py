"""torch-lstm's two recurrences on the CPU with each time step's elementwise work in one C call.

The eager steps (eager_steps.py) make seven elementwise calls a step forward and four backward, after
passes over all steps for the backward's local factors; at the course size each call costs more in
overhead than in arithmetic. Here a step is the recurrent product (PyTorch's, on every thread) and one call
to cpu_steps.c, which computes the gates, the cell and, backward, the local factors on the fly. The C is
built by the machine's C compiler (`$CC`, else `cc`) at first use, in well under a second, and kept under
`$XDG_CACHE_HOME/poemctl` (default ~/.cache/poemctl), one build per source, compiler, flags and CPU.

float32 on the CPU only: other dtypes and devices take the eager steps, and so does a machine where the C
cannot be built (with one warning saying so), or a process with POEMCTL_NO_C_STEPS=1 (to compare the two,
or to rule the C out). Same arguments and results as eager_steps.py's functions. numpy-lstm calls the same
C functions on its NumPy arrays (numpy_steps.py), and exp2_rows for its output layer, with the same fallback.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import torch

from poemctl.models import eager_steps

SOURCE = Path(__file__).with_suffix(".c")
# no -ffast-math (see the source); -march=native builds for this CPU (the cache key says which), and a
# compiler that does not know it (some for ARM) builds without it
FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC")
NATIVE = "-march=native"


def _cpu() -> str:
    """What -march=native builds for: the CPU's feature flags where Linux lists them, else its name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    features = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    return features or f"{platform.machine()} {platform.processor()}"


def compiler() -> str:
    """The C compiler to build with: $CC (a command, possibly with its own options), else cc."""
    return os.environ.get("CC") or "cc"


def library_path(cc: str) -> Path:
    """Where the build for this source, compiler, flags and CPU is kept."""
    key = "\n".join([SOURCE.read_text(), cc, *FLAGS, NATIVE, _cpu()])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poemctl"
    return cache / f"cpu_steps-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def _build(cc: str, out: Path) -> None:
    """Compile SOURCE into out; concurrent builds (one per process of a launch) each write their own file."""
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: its libraries are loaded and run
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    for flags in ((NATIVE, *FLAGS), FLAGS):
        try:
            command = [*shlex.split(cc), *flags, str(SOURCE), "-o", str(tmp)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired as e:
            raise OSError(f"{cc} took over {e.timeout:.0f} s") from e
        if done.returncode == 0:
            with tmp.open("ab") as f:  # its own digest at the end: the loader ignores bytes after the ELF's
                f.write(_trailer(tmp.read_bytes()))
            os.replace(tmp, out)  # atomic: a reader never sees a half-written library
            return
        tmp.unlink(missing_ok=True)
    raise OSError(done.stderr.strip().splitlines()[0] if done.stderr.strip() else f"exit status {done.returncode}")


MAGIC = b"poemctl-sha256:"


def _trailer(library: bytes) -> bytes:
    return MAGIC + hashlib.sha256(library).digest()


def intact(path: Path) -> bool:
    """Whether the library at path ends with the digest of the bytes before it (what _build wrote)."""
    data = path.read_bytes()
    n = len(MAGIC) + 32
    return len(data) > n and data[-n:] == _trailer(data[:-n])


_BUILDING = threading.Lock()  # numpy-lstm's threads may ask for the library at the same time


@functools.cache
def library() -> ctypes.CDLL | None:
    """The C step functions, built first if this machine has no build yet; None, with a warning, if it cannot
    (and None without one where POEMCTL_NO_C_STEPS=1 asks for the eager steps)."""
    if os.environ.get("POEMCTL_NO_C_STEPS", "") not in ("", "0"):
        return None
    cc = compiler()
    try:
        if not shlex.split(cc) or shutil.which(shlex.split(cc)[0]) is None:
            raise OSError(f"no C compiler '{cc}' (set CC to one)")
        path = library_path(cc)
        with _BUILDING:  # one build per process: its threads would write the same temporary file
            if path.is_file() and not intact(path):  # loading a damaged library could crash the process
                warnings.warn(f"the cached C steps {path} are damaged: rebuilding them", stacklevel=2)
                path.unlink(missing_ok=True)
            if not path.is_file():
                _build(cc, path)
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        why = f"the C steps could not be built: {e}"
        warnings.warn(f"torch-lstm and numpy-lstm run their slower eager steps: {why}", stacklevel=2)
        return None
    address, size = ctypes.c_void_p, ctypes.c_int64
    lib.forward_step.argtypes = [address] * 5 + [size, size]
    lib.backward_step.argtypes = [address] * 7 + [size, size]
    lib.exp2_rows.argtypes = [address] * 2 + [size, size]
    return lib


def _usable(x: torch.Tensor) -> bool:
    """Whether x's recurrence runs here: float32 on the CPU, with the C built (built now if need be)."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and library() is not None


def _addresses(x: torch.Tensor) -> list[int]:
    """The address of each x[t], t along the first dimension (made up front: data_ptr per step costs)."""
    base, step = x.data_ptr(), x.stride(0) * x.element_size()
    return [base + t * step for t in range(x.shape[0])]


def forward_steps(acts, w_hh_t, h0, c0) -> tuple[torch.Tensor, ...]:
    """eager_steps.forward_steps with each step's elementwise work in one C call."""
    if not _usable(acts):
        return eager_steps.forward_steps(acts, w_hh_t, h0, c0)
    T, B, G = acts.shape
    cs, tanh_cs, hs = eager_steps.step_buffers(acts, h0, c0)
    step = library().forward_step
    c_in, c_out, tanh_c, h_out = (_addresses(x) for x in (cs[:-1], cs[1:], tanh_cs, hs[1:]))
    for t, (a, h, a_at) in enumerate(zip(acts, hs[:-1], _addresses(acts), strict=True)):
        a.addmm_(h, w_hh_t)
        step(a_at, c_in[t], c_out[t], tanh_c[t], h_out[t], B, G // 4)
    return acts, cs, tanh_cs, hs


def backward_steps(acts, cs, tanh_cs, dhs, dh_last, dc_last, w_hh) -> tuple[torch.Tensor, ...]:
    """eager_steps.backward_steps with each step's elementwise work, local factors included, in one C call."""
    if not _usable(acts):
        return eager_steps.backward_steps(acts, cs, tanh_cs, dhs, dh_last, dc_last, w_hh)
    T, B, G = acts.shape
    step = library().backward_step
    dpre = torch.empty_like(acts)  # (T, B, 4H)
    dh = dhs[T - 1] + dh_last  # (B, H), contiguous, as every addmm below makes it
    dcs = dh.new_empty((2, *dh.shape))  # δC flowing in from step t+1 and out to t−1, taking turns
    dcs[0] = dc_last
    a_at, c_prev, tanh_c, d_at, dc_at = (_addresses(x) for x in (acts, cs[:-1], tanh_cs, dpre, dcs))
    for t in reversed(range(T)):
        turn = (T - 1 - t) % 2
        step(a_at[t], c_prev[t], tanh_c[t], dh.data_ptr(), dc_at[turn], d_at[t], dc_at[1 - turn], B, G // 4)
        dh = torch.addmm(dhs[t - 1], dpre[t], w_hh) if t > 0 else dpre[t] @ w_hh
    return dpre, dh, dcs[T % 2]
