"""The training loop: one Accelerate loop for every model, from a laptop CPU to several GPUs.

Read top to bottom: set up (data, model, optimizer, one `prepare`), then epochs of steps, evaluating test
perplexity and saving checkpoints as it goes. Only the main process writes files and draws progress.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from poemctl import checkpoint
from poemctl.config import RunConfig
from poemctl.data import load_corpus
from poemctl.errors import PoemctlError
from poemctl.registry import MODELS, OPTIMIZERS
from poemctl.scoring import batches, perplexity, split_batch, total_nll


class TrainingStopped(Exception):
    """The run stopped early for a reason that is not bad input (a NaN loss, Ctrl-C)."""


@dataclass(frozen=True)
class RunResult:
    """Where a finished run is and how it ended."""

    run_dir: Path
    steps: int
    best_perplexity: float
    last_perplexity: float


def make_run_dir(out: str, model: str) -> Path:
    """A new, empty run folder under out: <date>-<time>-<model>[-n]."""
    base = Path(out) / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}"
    run_dir, n = base, 1
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        while True:
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                n += 1
                run_dir = base.with_name(f"{base.name}-{n}")
    except OSError as e:
        raise PoemctlError(f"cannot create a run folder under {out}: {e.strerror or e}") from None


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed at once so a crash loses nothing written."""

    def __init__(self, path: Path | None):
        self._f = path.open("a", encoding="utf-8") if path is not None else None

    def write(self, **record) -> None:
        """Append one record (ignored on processes other than the main one)."""
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()

    def close(self) -> None:
        """Close the file."""
        if self._f is not None:
            self._f.close()


def make_optimizer(factory, params, cfg: RunConfig) -> torch.optim.Optimizer:
    """factory(params, cfg.optim); arguments the optimizer refuses are a one-line error."""
    try:
        return factory(params, cfg.optim)
    except (TypeError, ValueError) as e:
        raise PoemctlError(f"optimizer '{cfg.optim.name}': {e}") from None


def train(cfg: RunConfig, say=print) -> RunResult:
    """Train a model by cfg and return where its checkpoints are."""
    cpu = cfg.train.cpu
    if getattr(MODELS.get(cfg.train.model), "cpu_only", False) and not cpu:
        cpu = True
        if torch.cuda.is_available():
            say(f"{cfg.train.model} runs on the CPU only: training on the CPU")
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum,
    )
    try:
        return _train(accelerator, cfg)
    finally:
        accelerator.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # without it a rank can abort at exit


def _train(accelerator: Accelerator, cfg: RunConfig) -> RunResult:
    main = accelerator.is_main_process
    model_cls = MODELS.get(cfg.train.model)  # unknown names fail before any work
    optimizer_factory = OPTIMIZERS.get(cfg.optim.name)
    make_optimizer(optimizer_factory, [torch.nn.Parameter(torch.zeros(1))], cfg)  # bad arguments fail now

    set_seed(cfg.train.seed)
    with accelerator.main_process_first():  # the main process builds the cache, the others read it
        corpus = load_corpus(cfg.data)
    run_dir = make_run_dir(cfg.train.out, cfg.train.model) if main else None
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=len(corpus.vocab)))
    model = model_cls(cfg.model)
    optimizer = make_optimizer(optimizer_factory, model.parameters(), cfg)
    train_dl = batches(corpus.train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
    test_dl = batches(corpus.test, cfg.train.batch_size)
    model, optimizer, train_dl, test_dl = accelerator.prepare(model, optimizer, train_dl, test_dl)
    pad = corpus.vocab.pad_id

    steps_per_epoch = math.ceil(len(train_dl) / cfg.train.grad_accum)
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    if main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
    log = MetricsLog(run_dir / "metrics.jsonl" if main else None)
    state = {"best": math.inf, "last": math.nan, "evaluated_at": -1}

    def evaluate_and_save(step: int, epoch: int) -> None:
        if state["evaluated_at"] == step:
            return
        nll, n = total_nll(model, test_dl, pad, gather=accelerator.gather_for_metrics)
        ppl = perplexity(nll, n)
        state["last"], state["evaluated_at"] = ppl, step
        if main:
            meta = checkpoint.CheckpointMeta(cfg.train.model, cfg, corpus.vocab, corpus.corpus_hash, step, epoch, ppl)
            bare = accelerator.unwrap_model(model)
            checkpoint.save(run_dir / "last.safetensors", bare, meta)
            if ppl < state["best"]:
                checkpoint.save(run_dir / "best.safetensors", bare, meta)
            log.write(step=step, epoch=epoch, test_perplexity=ppl, test_tokens=n, wall_time=time.time() - t0)
        state["best"] = min(state["best"], ppl)
        accelerator.wait_for_everyone()

    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  test ppl {task.fields[ppl]:.1f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not main,
    )
    task = progress.add_task("train", total=total, epoch=1, loss=math.nan, ppl=math.nan, tps=0.0)
    t0 = time.time()
    step, window_nll, window_count, window_tokens, tick = 0, 0.0, 0.0, 0, time.time()
    model.train()
    try:
        with progress:
            for epoch in range(1, cfg.train.epochs + 1):
                for (rows,) in train_dl:
                    inputs, targets = split_batch(rows)
                    with accelerator.accumulate(model):
                        out = model(inputs, targets=targets, ignore_index=pad)
                        # Mean over the scored targets of all ranks: N processes equal one with N× the batch.
                        count = accelerator.reduce(out.count.sum().float(), "sum")
                        loss = out.nll.sum() * accelerator.num_processes / count.clamp(min=1)
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and cfg.train.clip:
                            accelerator.clip_grad_norm_(model.parameters(), cfg.train.clip)
                        optimizer.step()
                        optimizer.zero_grad()
                    window_nll += accelerator.reduce(out.nll.sum().detach(), "sum").item()
                    window_count += count.item()
                    window_tokens += inputs.numel() * accelerator.num_processes
                    if not accelerator.sync_gradients:
                        continue
                    step += 1
                    loss_value = window_nll / max(window_count, 1)
                    if not math.isfinite(loss_value):
                        kept = run_dir / "last.safetensors" if main else None
                        where = (
                            f"the last good checkpoint is {kept}" if kept and kept.is_file() else "no checkpoint yet"
                        )
                        raise TrainingStopped(f"loss became {loss_value} at step {step}; stopped ({where})")
                    now = time.time()
                    tps = window_tokens / max(now - tick, 1e-9)
                    log.write(step=step, epoch=epoch, loss=loss_value, tokens_per_s=tps, wall_time=now - t0)
                    progress.update(task, advance=1, epoch=epoch, loss=loss_value, tps=tps, ppl=state["last"])
                    window_nll, window_count, window_tokens, tick = 0.0, 0.0, 0, now
                    if cfg.train.eval_every and step % cfg.train.eval_every == 0:
                        evaluate_and_save(step, epoch)
                        progress.update(task, ppl=state["last"])
                    if step >= total:
                        break
                evaluate_and_save(step, epoch)
                progress.update(task, ppl=state["last"])
                if step >= total:
                    break
    finally:
        log.close()
    return RunResult(run_dir, step, state["best"], state["last"])
