"""Keep freed memory in the process instead of handing it back to the OS after every training step.

glibc's malloc serves large blocks (a step's activations, the N×V softmax) with mmap and returns them on
free, so every step page-faults its working set back in: on the development machine that was a sixth of a
training step. The CLI asks glibc to serve them from the heap and not to trim it (the process keeps its
peak memory, which a training run reaches in its first step anyway).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Turn off mmap-served blocks and heap trimming in glibc's malloc; False where that does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
