"""`poemctl bench`: training speed of models on the course config, side by side, with the matmul bound.

The models take turns in one process: every round fetches one batch and each model trains one step on it
(forward, loss, backward, clipping, Adam), in an order that rotates each round; a model's figure is its
median step. Taking turns puts every model under the same machine conditions, so the ratios hold on a
noisy machine where back-to-back runs drift by 20%. Peak memory needs a process of its own per model, so
it is measured in a short separate run. The matrix-product bound is the time the same library takes for
exactly the products of a standard LSTM training step on the same shapes: bound ratio = that time / step.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import resource
import statistics
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


def _endless(rows: torch.Tensor, batch_size: int):
    """Shuffled training batches, epoch after epoch."""
    for epoch in itertools.count():
        for (batch,) in batches(rows, batch_size, shuffle=True, seed=epoch):
            yield batch


class _Trainee:
    """One model with its optimizer, on its device."""

    def __init__(self, name: str, vocab_size: int, device: str):
        self.model_cls = MODELS.get(name)
        self.cpu_only = getattr(self.model_cls, "cpu_only", False)
        self.device = "cpu" if self.cpu_only else device
        torch.manual_seed(0)
        self.model = self.model_cls(ModelConfig(vocab_size=vocab_size)).to(self.device)
        self.optimizer = OPTIMIZERS.get("adam")(self.model.parameters(), OptimConfig())

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, pad: int) -> int:
        """One training step; returns the number of scored targets."""
        out = self.model(inputs.to(self.device), targets=targets.to(self.device), ignore_index=pad)
        loss = out.nll.sum() / out.count.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        loss.item()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return int(out.count.sum())


def _peak_one(name: str, data: DataConfig, batch_size: int, steps: int, device: str, queue) -> None:
    corpus = load_corpus(data)
    trainee = _Trainee(name, len(corpus.vocab), device)
    loader = _endless(corpus.train, batch_size)
    for _ in range(steps):
        trainee.step(*split_batch(next(loader)), corpus.vocab.pad_id)
    if trainee.device == "cuda":
        queue.put(torch.cuda.max_memory_allocated() / 2**20)
    else:
        queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _peak_mib(name: str, data: DataConfig, batch_size: int, device: str) -> float:
    """Peak memory of a few training steps of one model, in a fresh process of its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_one, args=(name, data, batch_size, 3, device, queue))
    proc.start()
    peak = queue.get()
    proc.join()
    return peak


def bench(models: list[str], data: DataConfig, batch_size: int, steps: int, device: str) -> list[BenchResult]:
    """Figures for each model: steps taken in turns in this process, peak memory in a process of its own."""
    for name in models:
        MODELS.get(name)  # unknown names fail before any work
    corpus = load_corpus(data)
    pad = corpus.vocab.pad_id
    trainees = [_Trainee(name, len(corpus.vocab), device) for name in models]
    loader = _endless(corpus.train, batch_size)
    step_s: list[list[float]] = [[] for _ in models]
    load_s: list[float] = []
    scored = 0
    for r in range(steps + 2):  # two warm-up rounds
        t0 = time.perf_counter()
        inputs, targets = (t.to(device) for t in split_batch(next(loader)))
        load = time.perf_counter() - t0
        for k in (r + j for j in range(len(models))):  # the order rotates: no model always goes first
            k %= len(models)
            t0 = time.perf_counter()
            n = trainees[k].step(inputs, targets, pad)
            if r >= 2:
                step_s[k].append(time.perf_counter() - t0)
        if r >= 2:
            load_s.append(load)
            scored += n
    load = statistics.median(load_s)
    T = corpus.train.shape[1] - 1
    results = []
    for name, trainee, times in zip(models, trainees, step_s, strict=True):
        cfg = trainee.model.cfg
        library = "numpy" if trainee.cpu_only else "torch"
        products = step_products(batch_size, T, scored // steps, cfg.embedding, cfg.hidden, cfg.vocab_size)
        matmul_s = time_products(products, library, trainee.device)
        step = statistics.median(times)
        results.append(
            BenchResult(
                name,
                batch_size * T / step,
                step * 1e3,
                load / (load + step),
                _peak_mib(name, data, batch_size, device),
                matmul_s * 1e3,
            )
        )
    return results
