"""numpy-lstm's threads (numpy_threads.py): products shared out, and the backlog of tasks beside the caller."""

import threading
import time

import numpy as np
import pytest
import torch

from poemctl.models import numpy_threads


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("rows", [0, 1, 7, 301])
def test_products_shared_among_threads_match_numpy(rows, two_threads):
    rng = np.random.default_rng(rows)
    a, b = rng.standard_normal((rows, 9)), rng.standard_normal((9, 4))
    np.testing.assert_allclose(numpy_threads.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(numpy_threads.matmul(b.T, a.T), b.T @ a.T, rtol=1e-12, atol=1e-12)


def test_backlog_runs_every_task_once_on_helpers_and_caller(two_threads):
    done, names = [], set()

    def task(s):
        time.sleep(0.005)  # long enough for the helper to start and take its share
        done.extend(range(s.start, s.stop))
        names.add(threading.current_thread().name)

    with numpy_threads.Backlog() as backlog:
        for s in numpy_threads.blocks(50, 3):
            backlog.put(task, s)
    assert sorted(done) == list(range(50))
    assert any(n.startswith("numpy-lstm") for n in names), names
    assert threading.current_thread().name in names  # the caller took its share after the block


def test_backlog_raises_a_helpers_error_after_the_rest_is_done(two_threads):
    done = []

    def task(s):
        if s.start == 0:
            raise ValueError("boom")
        done.append(s.start)

    with pytest.raises(ValueError, match="boom"), numpy_threads.Backlog() as backlog:
        for s in numpy_threads.blocks(10, 1):
            backlog.put(task, s)
    assert sorted(done) == list(range(1, 10))


def test_urgent_tasks_go_first_and_the_caller_runs_them_while_it_waits(two_threads):
    order, where = [], {}
    gate = threading.Event()

    def later(s):
        order.append(("later", s.start))

    def urgent(s):
        if s.start == 0:
            gate.wait(5)  # the helper is held here, so the caller must run the next urgent task itself
        order.append(("urgent", s.start))
        where[s.start] = threading.current_thread().name

    with numpy_threads.Backlog() as backlog:
        first = backlog.put(urgent, slice(0, 1), urgent=True)
        time.sleep(0.05)  # the helper has taken the first urgent task
        backlog.put(later, slice(5, 6))
        second = backlog.put(urgent, slice(1, 2), urgent=True)
        backlog.wait(second)
        assert second.is_set() and not first.is_set()
        assert where[1] == threading.current_thread().name
        gate.set()
        backlog.wait(first)
    assert order == [("urgent", 1), ("urgent", 0), ("later", 5)]


def test_waiting_for_a_failed_task_does_not_hang(two_threads):
    def fail(s):
        raise ValueError("bad block")

    with pytest.raises(ValueError, match="bad block"), numpy_threads.Backlog() as backlog:
        done = backlog.put(fail, slice(0, 1), urgent=True)
        time.sleep(0.05)  # the helper has taken it
        backlog.wait(done)  # set although the task failed; the error comes on leaving the block
        assert done.is_set()
