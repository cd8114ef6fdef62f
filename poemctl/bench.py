"""`poemctl bench`: training speed of models on the course config, side by side, with the matmul bound.

Each model trains in a fresh process of its own (forward, loss, backward, clipping, Adam), so its peak
memory and thread pools are its own. The processes of a round take turns step by step, in an order that
rotates each step, and train on the same batches: a model's step and the reference's step of the same turn
are about a second apart, so the ratio of the two cancels the drift of a shared machine (whole runs one
after the other, tens of seconds each, did not: on the development VM their ratios spread from 0.7 to 1.25).
A model's step time is the median over all its steps. The matrix-product bound is the time the same library
takes, in the same process, for exactly the products of a standard LSTM training step on the same shapes:
bound ratio = that time / step time.
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

from poemctl import gpu_modes
from poemctl.allocator import keep_freed_memory
from poemctl.config import BenchConfig, DataConfig, ModelConfig, OptimConfig
from poemctl.data import batches, load_corpus, split_batch
from poemctl.errors import PoemctlError
from poemctl.registry import MODELS, OPTIMIZERS

WARMUP_STEPS = 2  # untimed steps at the start of each process (first allocations, thread pools, kernels)


@dataclass(frozen=True)
class BenchResult:
    """One model's figures."""

    model: str
    tokens_per_s: float
    ms_per_step: float  # median over all its steps
    run_ms: tuple[float, ...]  # each round's median step
    ratio: float  # speed against the first model: median over all turns of the reference's step / this step
    ratio_range: tuple[float, float]  # lowest and highest round's median of those ratios
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
    """What one model's process measured in one round."""

    step_s: list[float]
    load_s: list[float]
    matmul_s: float
    peak_mib: float


def _worker(name: str, data: DataConfig, cfg: BenchConfig, seed: int, conn) -> None:
    """One model's process: set up, then one training step per "step" message; "finish" ends it.

    Replies: "ready" after set-up, (batch loading s, step s) per step, (matmul s, peak MiB) to "finish".
    """
    keep_freed_memory()  # as the CLI does for training (a spawned process starts with glibc's defaults)
    corpus = load_corpus(data)
    model_cls = MODELS.get(name)
    cpu_only = getattr(model_cls, "cpu_only", False)
    device = "cpu" if cpu_only else cfg.device
    torch.manual_seed(0)
    model = model_cls(ModelConfig(vocab_size=len(corpus.vocab))).to(device)
    gpu_modes.use(model, cfg)
    optimizer = OPTIMIZERS.get("adam")(model.parameters(), OptimConfig())
    loader = _endless(corpus.train, cfg.batch_size, seed)
    pad = corpus.vocab.pad_id
    conn.send("ready")
    scored = []
    while conn.recv() == "step":
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
        scored.append(int(out.count.sum()))
        conn.send((t1 - t0, time.perf_counter() - t1))
    shape = model.cfg
    T = corpus.train.shape[1] - 1
    products = step_products(
        cfg.batch_size, T, sum(scored) // len(scored), shape.embedding, shape.hidden, shape.vocab_size
    )
    matmul_s = time_products(products, "numpy" if cpu_only else "torch", device)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send((matmul_s, peak))


class _Process:
    """A model's bench process, driven one message at a time; its death is an error, not a hang."""

    def __init__(self, name: str, data: DataConfig, cfg: BenchConfig, seed: int, target=_worker) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(name, data, cfg, seed, child), daemon=True)
        self._proc.start()
        child.close()  # the child's end lives on in the child only: its death ends the pipe

    def ask(self, message: str | None = None):
        """Send message (unless None) and return the reply."""
        try:
            if message is not None:
                self._conn.send(message)
            return self._conn.recv()
        except (EOFError, BrokenPipeError):  # a process that died (out of memory, a kernel that fails to build)
            self._proc.join()
            raise PoemctlError(
                f"bench: the {self.name} run failed (its process exited with code {self._proc.exitcode}; "
                "its error is above)"
            ) from None

    def close(self) -> None:
        """End the process: after "finish" it exits by itself; one still waiting for a step is killed."""
        self._proc.join(timeout=1)
        if self._proc.is_alive():  # an error elsewhere left it waiting
            self._proc.kill()
            self._proc.join()
        self._conn.close()


def _round(data: DataConfig, cfg: BenchConfig, seed: int, target=_worker, progress=None) -> list[_Run]:
    """One round: a fresh process per model, taking turns step by step in an order that rotates each step.

    progress(), when given, is called after each step of each model.
    """
    procs = [_Process(name, data, cfg, seed, target) for name in cfg.models]
    try:
        for proc in procs:
            proc.ask()  # set-up done (all processes set up at once; nothing is timed there)
        timings: list[list[tuple[float, float]]] = [[] for _ in procs]
        for i in range(WARMUP_STEPS + cfg.steps):
            for k in ((i + j) % len(procs) for j in range(len(procs))):
                timings[k].append(procs[k].ask("step"))
                if progress is not None:
                    progress()
        runs = []
        for proc, steps in zip(procs, timings, strict=True):  # one at a time: each bound is timed alone
            matmul_s, peak = proc.ask("finish")
            timed = steps[WARMUP_STEPS:]
            runs.append(_Run([step for _, step in timed], [load for load, _ in timed], matmul_s, peak))
        return runs
    finally:
        for proc in procs:
            proc.close()


def bench(cfg: BenchConfig, data: DataConfig, progress=None) -> list[BenchResult]:
    """Figures for each model from cfg.repeats rounds of cfg.steps steps each, the models taking turns.

    progress(), when given, is called after each training step: cfg.repeats · (WARMUP_STEPS + cfg.steps) · models calls.
    """
    for name in cfg.models:
        MODELS.get(name)  # unknown names fail before any work
    T = load_corpus(data).train.shape[1] - 1  # also builds the cache once, outside the timed processes
    return _results(cfg, T, [_round(data, cfg, r, progress=progress) for r in range(cfg.repeats)])


def _results(cfg: BenchConfig, T: int, rounds: list[list[_Run]]) -> list[BenchResult]:
    """Each model's figures from its runs (rounds[r][k]: model k's run in round r)."""
    runs = list(zip(*rounds, strict=True))  # per model: its run of each round
    results = []
    for name, model_runs in zip(cfg.models, runs, strict=True):
        step = statistics.median(s for run in model_runs for s in run.step_s)
        load = statistics.median(s for run in model_runs for s in run.load_s)
        # a step and the reference's step of the same turn are a second apart: their ratio cancels the drift
        paired = [
            [a / b for a, b in zip(ref.step_s, own.step_s, strict=True)]
            for ref, own in zip(runs[0], model_runs, strict=True)
        ]
        per_round = [statistics.median(r) for r in paired]
        results.append(
            BenchResult(
                name,
                cfg.batch_size * T / step,
                step * 1e3,
                tuple(statistics.median(run.step_s) * 1e3 for run in model_runs),
                statistics.median(r for round_ in paired for r in round_),
                (min(per_round), max(per_round)),
                load / (load + step),
                max(run.peak_mib for run in model_runs),
                statistics.median(run.matmul_s for run in model_runs) * 1e3,
            )
        )
    return results
