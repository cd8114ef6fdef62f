"""The training loop: one Accelerate loop for every model, from a laptop CPU to several GPUs.

Read top to bottom: set up (data, model, optimizer, one `prepare`), then epochs of steps, evaluating test
perplexity, writing checkpoints and the training state as it goes. Only the main process writes files and
draws progress. A run killed at any moment resumes from its last state with `poemctl train --resume DIR`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import InitProcessGroupKwargs, set_seed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from poemctl import checkpoint, gpu_modes
from poemctl.config import RunConfig
from poemctl.data import batches, load_corpus, split_batch
from poemctl.errors import PoemctlError, TrainingStopped
from poemctl.faults import Interrupts, StepBoundary, peer_loss
from poemctl.files import atomic_write_bytes
from poemctl.metrics import MetricsLog
from poemctl.registry import MODELS, OPTIMIZERS
from poemctl.schedules import Schedule
from poemctl.scoring import perplexity, total_nll
from poemctl.state import Position, read_state, save_state
from poemctl.trackers import check_installed, flat, trackers


@dataclass(frozen=True)
class RunResult:
    """Where a finished run is and how it ended (run_dir is None on processes other than the main one)."""

    run_dir: Path | None
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


def groups(loader: Iterable, n: int) -> Iterator[list]:
    """Batches of loader in lists of n (the last list of an epoch may be shorter): one optimizer step each."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def _parameters(factory, named: Iterable) -> list:
    """What an optimizer factory is given: (name, parameter) pairs if it asks for them (factory.named), else
    the parameters."""
    named = list(named)
    return named if getattr(factory, "named", False) else [p for _, p in named]


@contextlib.contextmanager
def weights_to_use(optimizer):
    """The weights to evaluate and to save as a checkpoint: a schedule-free optimizer trains at one point and
    evaluates at its average (its eval()/train() switch); any other optimizer has one set of weights."""
    if not callable(getattr(optimizer, "eval", None)):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()


def make_optimizer(factory, params, cfg: RunConfig) -> torch.optim.Optimizer:
    """factory(params, cfg.optim); arguments the optimizer refuses are a one-line error."""
    try:
        return factory(params, cfg.optim)
    except (TypeError, ValueError) as e:
        raise PoemctlError(f"optimizer '{cfg.optim.name}': {e}") from None


def read_run_config(run_dir: Path) -> RunConfig:
    """The configuration a run folder was started with."""
    path = run_dir / "config.json"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PoemctlError(f"{run_dir} is not a poemctl run folder (config.json: {e})") from None
    return RunConfig.from_dict(values, str(path), complete=True)


def _initial_weights(cfg: RunConfig) -> tuple[dict, object]:
    """The weights and vocabulary of cfg.train.init_from, checked against cfg's model shape."""
    start, meta = checkpoint.load(cfg.train.init_from)
    have, want = meta.config.model, cfg.model
    if (have.embedding, have.hidden) != (want.embedding, want.hidden):
        raise PoemctlError(
            f"--init-from {cfg.train.init_from}: its model has E={have.embedding}, H={have.hidden}; "
            f"give --embedding {have.embedding} --hidden {have.hidden}"
        )
    return start.state_dict(), meta.vocab


def train(cfg: RunConfig | None = None, say=print, resume: Path | None = None, extend: dict | None = None) -> RunResult:
    """Train a model by cfg (or continue the run in resume, its length changed by extend: max_steps, epochs)
    and return where its checkpoints are."""
    if resume is not None:
        cfg = read_run_config(resume)
        if extend:
            cfg = replace(cfg, train=replace(cfg.train, **extend))
    model_cls = MODELS.get(cfg.train.model)  # unknown names fail before any work
    cpu = cfg.train.cpu or not torch.cuda.is_available()  # without cpu=True Accelerate runs no CPU process group
    if getattr(model_cls, "cpu_only", False) and not cpu:
        cpu = True
        say(f"{cfg.train.model} runs on the CPU only: training on the CPU")
    no_gpu = "a GPU (none is available here, or --cpu was given)"
    gpu_modes.check(cfg.train, not cpu, no_gpu, {cfg.train.model: model_cls})
    with warnings.catch_warnings():  # Accelerate warns of a tracker it cannot load and drops it: we refuse it below
        warnings.filterwarnings("ignore", message=".*no supported trackers.*")
        accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=cfg.train.mixed_precision,
            gradient_accumulation_steps=cfg.train.grad_accum,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),  # epoch e: shuffled by seed + e
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.dist_timeout))],
            **trackers(cfg.train.report_to, str(resume or cfg.train.out)),
        )
    check_installed(accelerator, cfg.train.report_to)
    try:
        return _train(accelerator, cfg, model_cls, resume, say)
    finally:
        accelerator.end_training()
        # The accelerator keeps the prepared model (DDP, whose reducer holds the process group), optimizer and
        # loaders: free them now, so that nothing of gloo's is left to be torn down while Python exits
        accelerator.free_memory()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # without it a rank can abort at exit


def _train(accelerator: Accelerator, cfg: RunConfig, model_cls, resume: Path | None, say) -> RunResult:
    main = accelerator.is_main_process
    optimizer_factory = OPTIMIZERS.get(cfg.optim.name)
    probe = {"lstm.weight_hh": torch.nn.Parameter(torch.zeros(4, 1)), "output.bias": torch.nn.Parameter(torch.zeros(1))}
    make_optimizer(optimizer_factory, _parameters(optimizer_factory, probe.items()), cfg)  # bad arguments fail now

    set_seed(cfg.train.seed)
    start = _initial_weights(cfg) if cfg.train.init_from else None
    saved = read_state(resume) if resume is not None else None
    with accelerator.main_process_first():  # the main process builds the cache, the others read it
        corpus = load_corpus(cfg.data, vocab=start[1] if start else None)
    if saved is not None and saved.corpus_hash and saved.corpus_hash != corpus.corpus_hash:
        raise PoemctlError(
            f"the corpus at {cfg.data.corpus} changed since the run in {resume} began (its hash was "
            f"{saved.corpus_hash[:12]}…, it is {corpus.corpus_hash[:12]}…): resume with the corpus it began with"
        )
    run_dir = resume or (make_run_dir(cfg.train.out, cfg.train.model) if main else None)
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=len(corpus.vocab)))
    model = model_cls(cfg.model)
    if start is not None and resume is None:
        model.load_state_dict(start[0])
    gpu_modes.use(model, cfg.train)
    optimizer = make_optimizer(optimizer_factory, _parameters(optimizer_factory, model.named_parameters()), cfg)
    train_dl = batches(corpus.train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
    test_dl = batches(corpus.test, cfg.train.batch_size)
    model, optimizer, train_dl, test_dl = accelerator.prepare(model, optimizer, train_dl, test_dl)
    pad, world, accum = corpus.vocab.pad_id, accelerator.num_processes, cfg.train.grad_accum
    bare = accelerator.unwrap_model(model)

    steps_per_epoch = math.ceil(len(train_dl) / accum)
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    schedule = Schedule(optimizer, cfg.train, total)

    if resume is not None:
        saved.restore(bare, optimizer)
        pos = saved.position
        if main:  # with its length as extended, if it was: a later --resume goes on from there
            atomic_write_bytes(
                run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False).encode()
            )
        if saved.schedule:
            try:
                schedule.load_state_dict(saved.schedule)
            except (KeyError, TypeError, ValueError) as e:
                raise PoemctlError(f"{saved.path}: the schedule's state does not fit the run ({e})") from None
    else:
        pos = Position(step=0, epoch=1, batches_done=0, best=math.inf, last=math.nan, evaluated_at=-1, wall_time=0)
        if main:
            (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False))
    if cfg.train.report_to:  # beside metrics.jsonl, in the run folder (tensorboard: RUN/tracks/)
        if main:
            accelerator.project_configuration.project_dir = accelerator.project_configuration.logging_dir = str(run_dir)
        accelerator.init_trackers("tracks", config=flat(cfg.to_dict()))
    log = MetricsLog(run_dir if main else None, keep_until_step=pos.step if resume else None)
    t0 = time.time() - pos.wall_time

    saved_at = pos.step if resume is not None else None  # the step of the last state written

    def save(position: Position) -> None:
        nonlocal saved_at
        saved_at = position.step
        if main:
            state = replace(position, wall_time=time.time() - t0)
            save_state(run_dir, bare.state_dict(), optimizer, state, schedule.state_dict(), corpus.corpus_hash)
        accelerator.wait_for_everyone()

    def evaluate_and_save(position: Position) -> Position:
        if position.evaluated_at == position.step:
            return position
        with weights_to_use(optimizer):
            nll, n = total_nll(model, test_dl, pad, gather=accelerator.gather_for_metrics)
            ppl = perplexity(nll, n)
            if main:
                meta = checkpoint.CheckpointMeta(
                    cfg.train.model, cfg, corpus.vocab, corpus.corpus_hash, position.step, position.epoch, ppl
                )
                checkpoint.save(run_dir / "last.safetensors", bare, meta)
                if ppl < position.best:
                    checkpoint.save(run_dir / "best.safetensors", bare, meta)
        schedule.evaluated(ppl)
        if plain:
            say(f"step {position.step}  epoch {position.epoch}  test perplexity {ppl:.1f}")
        if cfg.train.report_to:
            accelerator.log({"test/perplexity": ppl}, step=position.step)
        if main:
            log.write(
                step=position.step,
                epoch=position.epoch,
                test_perplexity=ppl,
                test_tokens=n,
                wall_time=time.time() - t0,
                train_time=position.train_time,
            )
        accelerator.wait_for_everyone()
        return replace(position, best=min(position.best, ppl), last=ppl, evaluated_at=position.step)

    out_of_time = False

    def budget_spent(position: Position) -> bool:
        """Whether --time-budget's minutes of training steps are spent (any process's clock decides for all)."""
        nonlocal out_of_time
        if cfg.train.time_budget and not out_of_time:
            spent = position.train_time >= cfg.train.time_budget * 60
            if world > 1:
                spent = accelerator.reduce(torch.tensor(float(spent), device=accelerator.device), "sum").item() > 0
            out_of_time = bool(spent)
        return out_of_time

    def finished(position: Position) -> bool:
        """--target-ppl reached at this step's evaluation, or --time-budget spent (and evaluated)."""
        evaluated = position.evaluated_at == position.step
        target = cfg.train.target_ppl and evaluated and position.last <= cfg.train.target_ppl
        return bool(target or (evaluated and budget_spent(position)))

    if resume is not None and (pos.step >= total or pos.epoch > cfg.train.epochs or finished(pos)):
        if main:
            say(
                f"the run in {resume} is finished ({pos.step} steps, test perplexity {pos.last:.1f}); give "
                "--max-steps or --epochs beyond it to extend it"
            )
        log.close()
        return RunResult(run_dir if main else None, pos.step, pos.best, pos.last)

    progress = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  test ppl {task.fields[ppl]:.1f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not main,
    )
    # In a log (output not a terminal) a bar would appear only at the end: one plain line now and then instead.
    plain = main and not progress.console.is_terminal
    progress.disable = progress.disable or plain
    task = progress.add_task(
        "train", total=total, completed=pos.step, epoch=pos.epoch, loss=math.nan, ppl=pos.last, tps=0.0
    )
    model.train()
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()  # a schedule-free optimizer steps only in train mode
    try:
        with progress, Interrupts() as interrupts:
            while pos.step < total and pos.epoch <= cfg.train.epochs and not finished(pos):
                train_dl.set_epoch(pos.epoch)
                loader = accelerator.skip_first_batches(train_dl, pos.batches_done) if pos.batches_done else train_dl
                for group in groups(loader, accum):
                    tick = time.time()
                    pos = replace(pos, step=pos.step + 1, batches_done=pos.batches_done + len(group))
                    # Loss = summed NLL / scored targets of the whole step (all ranks, all micro-batches), so
                    # N processes or N accumulated batches equal one batch N times larger.
                    targets_count = sum(int((rows[:, 1:] != pad).sum()) for (rows,) in group)
                    count = accelerator.reduce(torch.tensor(float(targets_count), device=accelerator.device), "sum")
                    step_nll = 0.0
                    for (rows,) in group:
                        inputs, targets = split_batch(rows)
                        with accelerator.accumulate(model):
                            out = model(inputs, targets=targets, ignore_index=pad)
                            # accelerate divides by grad_accum and DDP averages over ranks: undo both.
                            loss = out.nll.sum() * (world * accum) / count.clamp(min=1)
                            accelerator.backward(loss)
                            if accelerator.sync_gradients and cfg.train.clip:
                                accelerator.clip_grad_norm_(model.parameters(), cfg.train.clip)
                            optimizer.step()
                            optimizer.zero_grad()
                        step_nll += out.nll.detach().sum()
                    lr = optimizer.param_groups[0]["lr"]  # this step's
                    schedule.step()
                    loss_value = accelerator.reduce(step_nll, "sum").item() / max(count.item(), 1)
                    if not math.isfinite(loss_value):
                        kept = run_dir / "last.safetensors" if main else None
                        where = (
                            f"the last good checkpoint is {kept}" if kept and kept.is_file() else "no checkpoint yet"
                        )
                        raise TrainingStopped(f"loss became {loss_value} at step {pos.step}; stopped ({where})")
                    now = time.time()
                    pos = replace(pos, train_time=pos.train_time + now - tick)
                    tps = sum(rows.numel() for (rows,) in group) * world / max(now - tick, 1e-9)
                    if cfg.train.report_to:
                        accelerator.log({"train/loss": loss_value, "train/lr": lr, "train/tokens_per_s": tps}, pos.step)
                    log.write(
                        step=pos.step,
                        epoch=pos.epoch,
                        loss=loss_value,
                        lr=lr,
                        tokens_per_s=tps,
                        wall_time=now - t0,
                        train_time=pos.train_time,
                    )
                    progress.update(task, completed=pos.step, epoch=pos.epoch, loss=loss_value, tps=tps)
                    if plain and (pos.step % cfg.train.log_every == 0 or pos.step == total):
                        say(
                            f"step {pos.step}/{total}  epoch {pos.epoch}  loss {loss_value:.3f}  lr {lr:.2e}  "
                            f"{tps:,.0f} tok/s  {pos.train_time / 60:.1f} min"
                        )
                    if cfg.train.eval_every and pos.step % cfg.train.eval_every == 0:
                        pos = evaluate_and_save(pos)
                        progress.update(task, ppl=pos.last)
                    if cfg.train.save_every and pos.step % cfg.train.save_every == 0:
                        save(pos)
                    if interrupts.stop(accelerator):
                        raise StepBoundary
                    if budget_spent(pos):
                        pos = evaluate_and_save(pos)
                    if pos.step >= total or finished(pos):
                        break
                pos = evaluate_and_save(pos)
                progress.update(task, ppl=pos.last)
                if pos.batches_done >= len(train_dl):  # the epoch is complete
                    pos = replace(pos, epoch=pos.epoch + 1, batches_done=0)
                save(pos)
    except StepBoundary:
        save(pos)
        raise TrainingStopped(
            f"interrupted after step {pos.step}; the state is saved. Resume with: poemctl train --resume {run_dir}"
        ) from None
    except RuntimeError as e:
        if accelerator.num_processes == 1:
            raise
        # Another process died or hung: the collectives are broken, so nothing more can be saved.
        kept = f"the state saved after step {saved_at} stands" if saved_at is not None else "no state was saved"
        where = run_dir or "the run folder the main process named"
        raise TrainingStopped(
            f"lost another process of the run during step {pos.step} ({peer_loss(e)}); {kept}. "
            f"Restart every machine with: poemctl train --resume {where}"
        ) from None
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the loop: mid-step, nothing consistent to save
        raise TrainingStopped(
            f"interrupted during step {pos.step + 1}; not saved. Resume from the last saved state with: "
            f"poemctl train --resume {run_dir}"
        ) from None
    finally:
        log.close()
    return RunResult(run_dir if main else None, pos.step, pos.best, pos.last)
