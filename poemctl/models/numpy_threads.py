"""numpy-lstm's threads: NumPy's BLAS single-threaded inside the model, and work shared out by the model itself.

Inside the model the large products, and the output layer's exp and sums, are cut into row blocks and run
on the model's own threads (torch's intra-op count). The recurrence is a chain of small steps on one
thread; while it runs, the other threads work through what does not wait on it (`Backlog`).
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import ThreadpoolController


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="numpy-lstm")


def threads() -> int:
    """The model's threads: torch's intra-op count."""
    return max(1, torch.get_num_threads())


def run_all(fn, parts: list) -> None:
    """Run fn on each part on the caller's and the model's threads; NumPy releases the GIL inside its loops
    and BLAS. The caller takes the first part: a pool thread may be busy as a backlog's helper."""
    n = threads()
    if n == 1 or len(parts) <= 1:
        for part in parts:
            fn(part)
        return
    others = [_pool(n).submit(fn, part) for part in parts[1:]]
    try:
        fn(parts[0])
    finally:
        for other in others:
            other.result()


def blocks(n: int, size: int) -> list[slice]:
    """Slices of at most size covering range(n)."""
    size = max(1, size)
    return [slice(k, min(k + size, n)) for k in range(0, n, size)]


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b with the rows of a shared among the model's threads."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    run_all(lambda s: np.matmul(a[s], b, out=out[s]), blocks(len(a), -(-len(a) // threads())))
    return out


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def own_threads(fn):
    """Run fn with NumPy's BLAS single-threaded: the model's own threads share out the large products.

    Why: an OpenBLAS worker spins for a while after each product it joined, taking a core from whatever
    runs next (this model's exp threads, or torch's optimizer step) on a machine with few cores. The limit
    is process-wide while fn runs and is lifted after it.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with _blas().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapped


class Backlog:
    """Tasks that the model's other threads work through while the caller is busy, and the caller too after.

    Use as a context manager: `put` tasks inside the block; on leaving it the caller joins the helpers until
    the backlog is empty, and errors raised in a helper are raised there. Urgent tasks go before the others;
    `put` returns an event set when a task is over, and the caller waits for one it needs by running urgent
    tasks itself until it is done (`wait`). NumPy releases the GIL inside its products and loops, so a
    helper on large row blocks barely slows the caller's small steps.
    """

    URGENT, LATER, STOP = range(3)  # the order tasks are taken in

    def __init__(self) -> None:
        self._tasks: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()  # first in, first out within a rank
        self._helpers = [_pool(threads()).submit(self._drain) for _ in range(threads() - 1)]

    def put(self, fn: Callable[[slice], None], part: slice, urgent: bool = False) -> threading.Event:
        """Queue fn(part); the event is set when it is over (done, or failed)."""
        done = threading.Event()
        self._tasks.put((self.URGENT if urgent else self.LATER, next(self._order), fn, part, done))
        return done

    def wait(self, done: threading.Event) -> None:
        """Run urgent tasks on the caller's thread until done is set; wait for it when none is left."""
        while not done.is_set():
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                done.wait()
                return
            if task[0] != self.URGENT:
                self._tasks.put(task)
                done.wait()
                return
            self._run(task)

    @staticmethod
    def _run(task) -> None:
        _, _, fn, part, done = task
        try:
            fn(part)
        finally:
            done.set()

    def _drain(self) -> None:
        while (task := self._tasks.get())[0] != self.STOP:
            self._run(task)

    def __enter__(self) -> Backlog:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for _ in range(len(self._helpers) + 1):  # one stop mark per thread, taken after every task
            self._tasks.put((self.STOP, next(self._order), None, None, None))
        try:
            if exc_type is None:
                self._drain()
        finally:  # the helpers finish the backlog, even when the caller's share of it failed
            for helper in self._helpers:
                helper.result()
