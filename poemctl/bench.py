"""`poemctl bench`: training speed of models on the course config, side by side, with the matmul bound.

Each model trains a fixed number of steps (forward, loss, backward, Adam) in a fresh process of its own,
so that its peak memory is its own. The matrix-product bound is the time the same library takes for exactly
the step's matrix products (forward and backward) on the same shapes: bound ratio = that time / step time.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from dataclasses import dataclass

import numpy as np
import torch

from poemctl.config import DataConfig, ModelConfig, OptimConfig
from poemctl.data import load_corpus
from poemctl.registry import MODELS, OPTIMIZERS
from poemctl.scoring import batches, split_batch


@dataclass(frozen=True)
class BenchResult:
    """One model's figures."""

    model: str
    tokens_per_s: float
    ms_per_step: float
    load_fraction: float  # share of the step spent fetching the batch
    peak_mib: float  # peak resident memory of its process (CPU) or peak allocated (CUDA)
    matmul_ms: float  # the step's matrix products alone, same library and shapes


def step_products(B: int, T: int, scored: int, E: int, H: int, V: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one training step, forward and backward."""
    forward = [(B * T, E, 4 * H)] + [(B, H, 4 * H)] * T + [(scored, H, V)]
    backward = []
    for m, k, n in forward:
        backward += [(m, n, k), (k, m, n)]  # dX = dY Wᵀ, dW = Xᵀ dY
    return forward + backward


def time_products(products, library: str, device: str, repeat: int = 3) -> float:
    """Seconds the library takes for the given products (best of repeat)."""
    if library == "numpy":
        mats = [
            (np.random.rand(m, k).astype(np.float32), np.random.rand(k, n).astype(np.float32)) for m, k, n in products
        ]
        run = lambda: [a @ b for a, b in mats]  # noqa: E731
    else:
        mats = [(torch.rand(m, k, device=device), torch.rand(k, n, device=device)) for m, k, n in products]

        def run():
            [a @ b for a, b in mats]
            if device == "cuda":
                torch.cuda.synchronize()

    run()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def _bench_one(name: str, data: DataConfig, batch_size: int, steps: int, device: str, queue) -> None:
    torch.manual_seed(0)
    corpus = load_corpus(data)
    model_cls = MODELS.get(name)
    if getattr(model_cls, "cpu_only", False):
        device = "cpu"
    model = model_cls(ModelConfig(vocab_size=len(corpus.vocab))).to(device)
    optimizer = OPTIMIZERS.get("adam")(model.parameters(), OptimConfig())
    loader = iter(batches(corpus.train, batch_size, shuffle=True))
    pad = corpus.vocab.pad_id
    load_s = compute_s = 0.0
    scored = 0
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        (rows,) = next(loader)
        inputs, targets = (t.to(device) for t in split_batch(rows))
        t1 = time.perf_counter()
        out = model(inputs, targets=targets, ignore_index=pad)
        loss = out.nll.sum() / out.count.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad()
        loss.item()
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i >= 2:
            load_s, compute_s, scored = load_s + t1 - t0, compute_s + t2 - t1, scored + int(out.count.sum())
    step_s = (load_s + compute_s) / steps
    T = corpus.train.shape[1] - 1
    cfg = model.cfg
    library = "numpy" if getattr(model_cls, "cpu_only", False) else "torch"
    products = step_products(batch_size, T, scored // steps, cfg.embedding, cfg.hidden, cfg.vocab_size)
    matmul_s = time_products(products, library, device)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        BenchResult(name, batch_size * T / step_s, step_s * 1e3, load_s / (load_s + compute_s), peak, matmul_s * 1e3)
    )


def bench(models: list[str], data: DataConfig, batch_size: int, steps: int, device: str) -> list[BenchResult]:
    """Figures for each model, each measured in a fresh process."""
    for name in models:
        MODELS.get(name)  # unknown names fail before any work
    load_corpus(data)  # build the cache once, outside the timed processes
    ctx = mp.get_context("spawn")
    results = []
    for name in models:
        queue = ctx.Queue()
        proc = ctx.Process(target=_bench_one, args=(name, data, batch_size, steps, device, queue))
        proc.start()
        results.append(queue.get())
        proc.join()
    return results
