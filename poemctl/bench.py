"""`poemctl bench`: training speed of models on the course config, side by side, with the matmul bound.

Each model trains in fresh processes of its own (forward, loss, backward, clipping, Adam), so its peak
memory and thread pools are its own; the runs alternate between the models, `repeats` rounds in an order
that rotates each round, so slow drift of a shared machine lands on every model alike. A model's step time
is the median over all its runs' steps. The matrix-product bound is the time the same library takes, in the
same process, for exactly the products of a standard LSTM training step on the same shapes:
bound ratio = that time / step time.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import dataclass
from queue import Empty

import numpy as np
import torch

from poemctl.allocator import keep_freed_memory
from poemctl.config import BenchConfig, DataConfig, ModelConfig, OptimConfig
from poemctl.data import load_corpus
from poemctl.errors import PoemctlError
from poemctl.models.base import check_gpu_modes, use_gpu_modes
from poemctl.registry import MODELS, OPTIMIZERS
from poemctl.scoring import batches, split_batch


@dataclass(frozen=True)
class BenchResult:
    """One model's figures."""

    model: str
    tokens_per_s: float
    ms_per_step: float  # median over all its runs' steps
    run_ms: tuple[float, ...]  # each run's median step
    ratio: float  # speed against the first model: median over rounds of its run time / this run time
    ratio_range: tuple[float, float]  # lowest and highest of those rounds' ratios
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


def _endless(rows: torch.Tensor, batch_size: int, seed: int):
    """Shuffled training batches, epoch after epoch."""
    for epoch in itertools.count():
        for (batch,) in batches(rows, batch_size, shuffle=True, seed=seed + epoch):
            yield batch


@dataclass(frozen=True)
class _Run:
    """What one process measured."""

    step_s: list[float]
    load_s: list[float]
    matmul_s: float
    peak_mib: float


def _run_one(name: str, data: DataConfig, cfg: BenchConfig, seed: int, queue) -> None:
    keep_freed_memory()  # as the CLI does for training (a spawned process starts with glibc's defaults)
    corpus = load_corpus(data)
    model_cls = MODELS.get(name)
    cpu_only = getattr(model_cls, "cpu_only", False)
    device = "cpu" if cpu_only else cfg.device
    torch.manual_seed(0)
    model = model_cls(ModelConfig(vocab_size=len(corpus.vocab))).to(device)
    use_gpu_modes(model, cfg)
    optimizer = OPTIMIZERS.get("adam")(model.parameters(), OptimConfig())
    loader = _endless(corpus.train, cfg.batch_size, seed)
    pad = corpus.vocab.pad_id
    step_s, load_s, scored = [], [], 0
    for i in range(cfg.steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        inputs, targets = (t.to(device) for t in split_batch(next(loader)))
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
        if i >= 2:
            load_s.append(t1 - t0)
            step_s.append(time.perf_counter() - t1)
            scored += int(out.count.sum())
    shape = model.cfg
    T = corpus.train.shape[1] - 1
    products = step_products(cfg.batch_size, T, scored // cfg.steps, shape.embedding, shape.hidden, shape.vocab_size)
    matmul_s = time_products(products, "numpy" if cpu_only else "torch", device)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(_Run(step_s, load_s, matmul_s, peak))


def _in_process(name: str, data: DataConfig, cfg: BenchConfig, seed: int, target=_run_one) -> _Run:
    """target's figures for one run of the model, from a fresh process; an error if that process dies."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(name, data, cfg, seed, queue))
    proc.start()
    while True:  # a process that dies (out of memory, a kernel that fails to build) must not hang the bench
        try:
            run = queue.get(timeout=1.0)
            break
        except Empty:
            if not proc.is_alive() and queue.empty():
                raise PoemctlError(
                    f"bench: the {name} run failed (its process exited with code {proc.exitcode}; its error is above)"
                ) from None
    proc.join()
    return run


def bench(cfg: BenchConfig, data: DataConfig) -> list[BenchResult]:
    """Figures for each model from cfg.repeats runs of cfg.steps steps each, alternating between the models."""
    for name in cfg.models:
        MODELS.get(name)  # unknown names fail before any work
    check_gpu_modes(cfg)
    T = load_corpus(data).train.shape[1] - 1  # also builds the cache once, outside the timed processes
    models = cfg.models
    runs: list[list[_Run]] = [[] for _ in models]
    for r in range(cfg.repeats):
        for k in ((r + j) % len(models) for j in range(len(models))):  # the order rotates each round
            runs[k].append(_in_process(models[k], data, cfg, seed=r))
    run_ms = [tuple(statistics.median(run.step_s) * 1e3 for run in model_runs) for model_runs in runs]
    results = []
    for name, model_runs, ms in zip(models, runs, run_ms, strict=True):
        step = statistics.median(s for run in model_runs for s in run.step_s)
        load = statistics.median(s for run in model_runs for s in run.load_s)
        # runs of the same round are minutes apart at most: their ratio cancels the machine's slow drift
        ratios = [ref / own for ref, own in zip(run_ms[0], ms, strict=True)]
        matmul = statistics.median(run.matmul_s for run in model_runs)
        peak = max(run.peak_mib for run in model_runs)
        results.append(
            BenchResult(
                name,
                cfg.batch_size * T / step,
                step * 1e3,
                ms,
                statistics.median(ratios),
                (min(ratios), max(ratios)),
                load / (load + step),
                peak,
                matmul * 1e3,
            )
        )
    return results
