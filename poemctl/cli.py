"""The `poemctl` command line: thin Typer commands that build configs and call the modules that do the work."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console

from poemctl.config import BenchConfig, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from poemctl.errors import PoemctlError

app = typer.Typer(
    help="Train LSTM language models on the Complete Tang Poems (全唐诗) and write new poems with them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Get and inspect the corpus.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
# Warnings (a plugin that fails to import, say) as one line each, without the source line.
warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"

_D, _T, _O, _M, _B = DataConfig(), TrainConfig(), OptimConfig(), ModelConfig(), BenchConfig()


def print_wide(table, width: int) -> None:
    """Print a table at least width columns wide, so that names are never cut (a pipe reports 80)."""
    Console(soft_wrap=True, width=max(out.width, width)).print(table)


def user_errors(fn):
    """Turn PoemctlError into one line on stderr and exit code 2, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PoemctlError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


CorpusOpt = typer.Option(_D.corpus, "--corpus", help="Corpus folder (laid out like upstream chinese-poetry).")
CacheOpt = typer.Option(_D.cache_dir, "--cache-dir", help="Where the encoded corpus is cached.")


@data_app.command("download")
@user_errors
def data_download(
    source: str = typer.Option(
        "https://raw.githubusercontent.com/chinese-poetry/chinese-poetry/master",
        "--from",
        help="Base URL or local folder laid out like the upstream chinese-poetry repository.",
    ),
    dest: Path = typer.Option(Path(_D.corpus), "--dest", help="Folder to put the corpus in."),
) -> None:
    """Download the 全唐诗 JSON files (57,607 poems), checking that each one parses."""
    from rich.progress import Progress

    from poemctl.corpus import download, manifest

    n = len(manifest()["files"])
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("downloading 全唐诗", total=n)
        paths = download(source, dest, progress=lambda: progress.advance(task))
    out.print(f"{len(paths)} files in {paths[0].parent}")


@data_app.command("info")
@user_errors
def data_info(
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    max_poems: int = typer.Option(_D.max_poems, help="Use only the first N poems (0: all)."),
) -> None:
    """Summarise the corpus under the course preset: files, poems, vocabulary, split sizes, padding."""
    from rich.table import Table

    from poemctl.corpus import corpus_files
    from poemctl.data import load_corpus

    data = load_corpus(DataConfig(corpus=corpus, cache_dir=cache_dir, max_poems=max_poems))
    rows = len(data.train) + len(data.test)
    scored = float((data.train[:, 1:] != data.vocab.pad_id).float().mean())
    table = Table("", "", show_header=False)
    for key, value in [
        ("corpus", f"{corpus} ({len(corpus_files(corpus))} files, hash {data.corpus_hash})"),
        ("poems kept", f"{rows:,}"),
        ("vocabulary", f"{len(data.vocab):,} tokens (padding and <unk> included)"),
        ("train / test", f"{len(data.train):,} / {len(data.test):,} poems"),
        ("row length", f"{data.train.shape[1]} characters; {scored:.0%} of training targets are not padding"),
    ]:
        table.add_row(key, value)
    print_wide(table, 130)


# Options shared by `train` and `compare`; each maps onto the config field of the same name.
MODEL_OPT = typer.Option(_T.model, help="Model plugin (see `poemctl plugins`).")
EPOCHS_OPT = typer.Option(_T.epochs, help="Passes over the training split.")
MAX_STEPS_OPT = typer.Option(_T.max_steps, help="Stop after this many optimizer steps (0: no limit).")
BATCH_OPT = typer.Option(_T.batch_size, help="Poems per step (per process).")
LR_OPT = typer.Option(_O.lr, help="Learning rate.")
HIDDEN_OPT = typer.Option(_M.hidden, help="Hidden size H of the LSTM.")
EMBEDDING_OPT = typer.Option(_M.embedding, help="Embedding size E.")
SEED_OPT = typer.Option(_T.seed, help="Seed for initialisation and data order.")
EVAL_OPT = typer.Option(_T.eval_every, help="Test perplexity every N steps (0: each epoch end).")
OUT_OPT = typer.Option(_T.out, "--out", help="Folder that receives the run folder.")
CPU_OPT = typer.Option(_T.cpu, help="Train on the CPU even where a GPU exists.")
# torch-lstm's GPU fast paths, for `train` and `bench`
CUDA_GRAPHS_OPT = typer.Option(
    _T.cuda_graphs, help="Replay torch-lstm's recurrences from CUDA graphs (GPU only; experimental, unmeasured)."
)
FUSED_STEPS_OPT = typer.Option(
    _T.fused_steps,
    help="Run each of torch-lstm's time steps as one fused Triton kernel (GPU only; experimental, unmeasured).",
)
MAX_POEMS_OPT = typer.Option(_D.max_poems, help="Use only the first N poems (0: all).")


def parse_opt_args(pairs: list[str]) -> tuple[tuple[str, object], ...]:
    """--opt-arg key=value pairs; values are JSON (1e-3, true, [0.9, 0.99]) or plain strings."""
    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PoemctlError(f"--opt-arg takes key=value, got '{pair}'")
        try:
            parsed.append((key, json.loads(value)))
        except json.JSONDecodeError:
            parsed.append((key, value))
    return tuple(parsed)


def make_config(**options) -> RunConfig:
    """A RunConfig from CLI options, each routed to the config field of the same name."""
    renames = {"optimizer": ("optim", "name"), "model": ("train", "model"), "out_dir": ("train", "out")}
    parts: dict[str, dict] = {"data": {}, "model": {}, "optim": {}, "train": {}}
    fields = {
        part: {f.name for f in dataclasses.fields(kind)}
        for part, kind in (("data", DataConfig), ("model", ModelConfig), ("optim", OptimConfig), ("train", TrainConfig))
    }
    for name, value in options.items():
        part, field = renames.get(name) or next((p, name) for p in parts if name in fields[p])
        parts[part][field] = value
    return RunConfig(
        data=DataConfig(**parts["data"]),
        model=ModelConfig(**parts["model"]),
        optim=OptimConfig(**parts["optim"]),
        train=TrainConfig(**parts["train"]),
    )


@app.command()
@user_errors
def train(
    model: str = MODEL_OPT,
    optimizer: str = typer.Option(_O.name, help="Optimizer plugin: sgd, momentum, adagrad, adam, adamw, rmsprop…"),
    epochs: int = EPOCHS_OPT,
    max_steps: int = MAX_STEPS_OPT,
    batch_size: int = BATCH_OPT,
    lr: float = LR_OPT,
    momentum: float = typer.Option(_O.momentum, help="Momentum μ for the momentum optimizer."),
    weight_decay: float = typer.Option(_O.weight_decay, help="Weight decay (L2; decoupled for adamw)."),
    betas: tuple[float, float] = typer.Option(_O.betas, help="Adam-family β1 β2."),
    eps: float = typer.Option(_O.eps, help="ε of adagrad, adam, adamw, rmsprop."),
    opt_arg: list[str] = typer.Option([], help="Any other optimizer argument as key=value (repeatable)."),
    hidden: int = HIDDEN_OPT,
    embedding: int = EMBEDDING_OPT,
    seed: int = SEED_OPT,
    eval_every: int = EVAL_OPT,
    save_every: int = typer.Option(_T.save_every, help="Save the training state every N steps (0: epoch ends)."),
    resume: Path | None = typer.Option(
        None, help="Continue the run in this folder from its last saved state (its own options apply)."
    ),
    clip: float = typer.Option(_T.clip, help="Clip the gradient norm to this (0: off)."),
    grad_accum: int = typer.Option(_T.grad_accum, help="Accumulate gradients over N batches per step."),
    mixed_precision: str = typer.Option(_T.mixed_precision, help="no, bf16 or fp16 (through Accelerate)."),
    cuda_graphs: bool = CUDA_GRAPHS_OPT,
    fused_steps: bool = FUSED_STEPS_OPT,
    out_dir: str = OUT_OPT,
    cpu: bool = CPU_OPT,
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    traditional: bool = typer.Option(_D.traditional, help="Keep traditional characters (no OpenCC t2s)."),
    keep_commas: bool = typer.Option(_D.keep_commas, help="Keep '，' (the course deletes it)."),
    min_freq: int = typer.Option(_D.min_freq, help="Characters seen fewer times become <unk>."),
    seq_len: int = typer.Option(_D.seq_len, help="Cut / front-pad every poem to this many characters."),
    max_poems: int = MAX_POEMS_OPT,
) -> None:
    """Train a model (course defaults: Adam, lr 0.01, batch 64, H=E=128, 10 epochs)."""
    options = dict(locals())
    options["extra"] = parse_opt_args(options.pop("opt_arg"))
    resume = options.pop("resume")
    result = _run(None if resume else make_config(**options), resume=resume)
    out.print(
        f"{result.steps} steps; test perplexity {result.last_perplexity:.1f} "
        f"(best {result.best_perplexity:.1f}); checkpoints in {result.run_dir}",
        highlight=False,
    )


def _run(cfg: RunConfig | None, resume: Path | None = None):
    """Train by cfg (or resume a run); a run that stops early (NaN, Ctrl-C) exits 1 with its one-line reason."""
    from poemctl.train import TrainingStopped
    from poemctl.train import train as run_training

    try:
        result = run_training(cfg, say=err.print, resume=resume)
    except TrainingStopped as e:
        err.print(f"[bold red]stopped:[/] {e}", highlight=False)
        raise typer.Exit(1) from None
    if result.run_dir is None:  # not the main process: it prints nothing
        raise typer.Exit(0)
    return result


@app.command()
@user_errors
def compare(
    optimizers: str = typer.Option("sgd,momentum,adagrad,adam", help="Comma-separated optimizers to compare."),
    model: str = MODEL_OPT,
    epochs: int = EPOCHS_OPT,
    max_steps: int = MAX_STEPS_OPT,
    batch_size: int = BATCH_OPT,
    lr: float = LR_OPT,
    hidden: int = HIDDEN_OPT,
    embedding: int = EMBEDDING_OPT,
    seed: int = SEED_OPT,
    eval_every: int = EVAL_OPT,
    out_dir: str = typer.Option("runs/compare", "--out", help="Folder that receives one run per optimizer."),
    cpu: bool = CPU_OPT,
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    max_poems: int = MAX_POEMS_OPT,
) -> None:
    """Train the same model, seed and data order under each optimizer; plot the curves and tabulate."""
    options = dict(locals())
    from rich.table import Table

    from poemctl.metrics import read_metrics
    from poemctl.plots import plot_runs
    from poemctl.registry import OPTIMIZERS

    names = [n.strip() for n in options.pop("optimizers").split(",") if n.strip()]
    if not names:
        raise PoemctlError("--optimizers names no optimizer")
    base = options.pop("out_dir")
    configs = [make_config(**options, optimizer=name, out_dir=str(Path(base) / name)) for name in names]
    for name in names:  # every name is checked before any training
        OPTIMIZERS.get(name)
    runs = [_run(cfg).run_dir for cfg in configs]
    png = Path(base) / "compare.png"
    plot_runs(runs, png, labels=names)
    table = Table("optimizer", "final test ppl", "best test ppl", "steps", "run")
    for name, run in zip(names, runs, strict=True):
        records = read_metrics(run)
        evals = [r["test_perplexity"] for r in records if "test_perplexity" in r]
        steps = max(r["step"] for r in records)
        table.add_row(name, f"{evals[-1]:.1f}", f"{min(evals):.1f}", str(steps), str(run))
    print_wide(table, 120)
    out.print(f"curves: {png}")


@app.command()
@user_errors
def plot(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (each with a metrics.jsonl)."),
    output: Path = typer.Option(Path("curves.png"), "--output", "-o", help="PNG file to write."),
) -> None:
    """Draw the training-loss and test-perplexity curves of runs into one PNG."""
    from poemctl.plots import plot_runs

    plot_runs(run_dirs, output)
    out.print(f"curves: {output}")


LINES_OPT = typer.Option(4, help="Number of lines (an --acrostic sets it).")
CHARS_OPT = typer.Option(7, help="Characters per line: 5 (五言) or 7 (七言).")
SEED_SAMPLE_OPT = typer.Option(None, help="Seed: the same seed and options write the same poems.")
CKPT_OPT = typer.Option(None, help="Checkpoint (default: best of the most recent run in --runs).")
RUNS_OPT = typer.Option(_T.out, help="Where to look for the most recent run.")
MODEL_RUN_OPT = typer.Option(None, help="Run the checkpoint in this model (default: its own).")
STRATEGY_OPT = typer.Option("course", help="course (SPEC.md: top 5, then top 10), sample, or greedy.")
TEMPERATURE_OPT = typer.Option(1.0, help="Softmax temperature (--strategy sample).")
TOP_K_OPT = typer.Option(0, help="Keep the k likeliest characters (--strategy sample; 0: off).")
TOP_P_OPT = typer.Option(1.0, help="Keep the smallest set of probability ≥ p (--strategy sample; 1: off).")
ACROSTIC_OPT = typer.Option("", help="藏头诗: line k starts with the k-th of these characters, e.g. 春夏秋冬.")
RHYME_OPT = typer.Option(False, help="End the even lines (and line 1 when its pattern asks) in one 平水韵 group.")
TONES_OPT = typer.Option(False, help="Follow a regular 平仄 pattern of 五言/七言 绝句.")


def _sampling(ckpt, runs, model, **options):
    """The checkpoint's model and metadata, and the SampleConfig of the options."""
    from poemctl import checkpoint
    from poemctl.sampling import SampleConfig

    cfg = SampleConfig(**options)  # bad numbers fail before the checkpoint is read
    net, meta = checkpoint.load(ckpt or checkpoint.latest(runs), model)
    return net, meta, cfg


@app.command()
@user_errors
def sample(
    first: str = typer.Argument("月", help="The poem's first character (ignored with --acrostic)."),
    lines: int = LINES_OPT,
    chars: int = CHARS_OPT,
    num: int = typer.Option(1, help="How many poems to write."),
    seed: int | None = SEED_SAMPLE_OPT,
    strategy: str = STRATEGY_OPT,
    temperature: float = TEMPERATURE_OPT,
    top_k: int = TOP_K_OPT,
    top_p: float = TOP_P_OPT,
    acrostic: str = ACROSTIC_OPT,
    rhyme: bool = RHYME_OPT,
    tones: bool = TONES_OPT,
    ckpt: Path | None = CKPT_OPT,
    runs: str = RUNS_OPT,
    model: str | None = MODEL_RUN_OPT,
) -> None:
    """Write poems that start with FIRST (default: one 七言绝句, 4 lines of 7 characters)."""
    from poemctl.sampling import format_poem, write_poems

    if len(first) != 1:
        raise PoemctlError(f"give one start character, got '{first}'")
    options = {k: v for k, v in locals().items() if k in SAMPLE_FIELDS}
    net, meta, cfg = _sampling(ckpt, runs, model, **options)
    data = meta.config.data
    poems = write_poems(net, meta.vocab, first, cfg, seq_len=data.seq_len, keep_commas=data.keep_commas)
    out.print("\n\n".join(format_poem(p) for p in poems), highlight=False)


@app.command()
@user_errors
def evaluate(
    num: int = typer.Option(1000, help="How many poems to write and score."),
    first: str = typer.Option("", help="Start every poem with this character (default: 月, 山, 春, … in turn)."),
    lines: int = LINES_OPT,
    chars: int = CHARS_OPT,
    seed: int | None = typer.Option(0, help="Seed for the poems."),
    strategy: str = STRATEGY_OPT,
    temperature: float = TEMPERATURE_OPT,
    top_k: int = TOP_K_OPT,
    top_p: float = TOP_P_OPT,
    acrostic: str = ACROSTIC_OPT,
    rhyme: bool = RHYME_OPT,
    tones: bool = TONES_OPT,
    ckpt: Path | None = CKPT_OPT,
    runs: str = RUNS_OPT,
    model: str | None = MODEL_RUN_OPT,
    corpus: str | None = typer.Option(None, help="Corpus for the copy rate (default: the checkpoint's)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the statistics to this JSON file."),
) -> None:
    """Write N poems and report form validity, rhyme and tone rates, copy rate, distinct-1/2, time per poem."""
    import time
    from dataclasses import replace

    from rich.table import Table

    from poemctl.data import load_corpus
    from poemctl.files import atomic_write_bytes
    from poemctl.poem_stats import line_set, poem_stats
    from poemctl.prosody import Prosody
    from poemctl.sampling import write_poems

    options = {k: v for k, v in locals().items() if k in SAMPLE_FIELDS}
    net, meta, cfg = _sampling(ckpt, runs, model, **options)
    data = meta.config.data if corpus is None else replace(meta.config.data, corpus=corpus)
    train_rows = load_corpus(data, vocab=meta.vocab).train
    pad = meta.vocab.pad_id
    seen = line_set([meta.vocab.decode(r[r != pad].tolist()) for r in train_rows], chars)
    prosody = Prosody()
    starts = list(first) or [c for c in "月山春风花秋江云日夜" if c in meta.vocab]
    poems, seconds = [], 0.0
    for i, start in enumerate(starts):  # one batch per start character
        share = num // len(starts) + (i < num % len(starts))
        if share == 0:
            continue
        t = time.perf_counter()
        poems += write_poems(
            net,
            meta.vocab,
            start,
            replace(cfg, num=share, seed=(seed or 0) + i),
            seq_len=data.seq_len,
            keep_commas=data.keep_commas,
            prosody=prosody,
        )
        seconds += time.perf_counter() - t
    n_lines = len(acrostic) or lines
    stats = poem_stats(poems, n_lines, chars, seconds, seen, prosody)
    table = Table("statistic", "value", title=f"{stats.poems} poems, {n_lines}×{chars}, {strategy}")
    for key, value in stats.as_dict().items():
        shown = str(value) if key == "poems" else f"{value:.2f}" if key == "ms_per_poem" else f"{value:.1%}"
        table.add_row(key, shown)
    out.print(table)
    if json_out is not None:
        atomic_write_bytes(json_out, json.dumps(stats.as_dict(), indent=2).encode())


SAMPLE_FIELDS = (
    "lines",
    "chars",
    "num",
    "seed",
    "strategy",
    "temperature",
    "top_k",
    "top_p",
    "acrostic",
    "rhyme",
    "tones",
)


@app.command("perplexity")
@user_errors
def perplexity_cmd(
    ckpt: Path = typer.Argument(..., help="A poemctl .safetensors checkpoint."),
    split: str = typer.Option("test", help="Which split to score: test or train."),
    text: Path | None = typer.Option(None, help="Score this UTF-8 file instead: one poem per line."),
    corpus: str | None = typer.Option(None, help="Corpus folder (default: the one the checkpoint was trained on)."),
    model: str | None = typer.Option(None, help="Run the checkpoint in this model (default: its own)."),
    batch_size: int = typer.Option(256, help="Poems per batch."),
) -> None:
    """Print the perplexity of a checkpoint on its test split (rebuilt from its metadata) or on a file."""
    from dataclasses import replace

    import torch

    from poemctl import checkpoint
    from poemctl.data import encode_rows, load_corpus, prepare_poems
    from poemctl.scoring import batches, perplexity, total_nll

    if split not in ("test", "train"):
        raise PoemctlError(f"--split must be test or train, got {split}")
    if batch_size < 1:
        raise PoemctlError(f"--batch-size must be at least 1, got {batch_size}")
    net, meta = checkpoint.load(ckpt, model)
    data_cfg = meta.config.data if corpus is None else replace(meta.config.data, corpus=corpus)
    if text is not None:
        try:
            raw = text.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise PoemctlError(f"cannot read {text}: {e}") from None
        poems = prepare_poems(data_cfg, [line for line in raw if line.strip()], str(text))
        rows, source = torch.from_numpy(encode_rows(poems, meta.vocab, data_cfg.seq_len)), str(text)
    else:
        data = load_corpus(data_cfg, vocab=meta.vocab)
        if data.corpus_hash != meta.corpus_hash:
            err.print("[yellow]warning:[/] this corpus differs from the one the checkpoint was trained on")
        rows, source = (data.test if split == "test" else data.train), f"{split} split"
    nll, n = total_nll(net, batches(rows, batch_size), meta.vocab.pad_id)
    ppl = perplexity(nll, n)
    shown = f"{ppl:.2f}" if math.isfinite(ppl) else str(ppl)
    out.print(f"perplexity {shown} over {n} tokens ({source}, {len(rows)} poems)", highlight=False)


@app.command("gradcheck")
@user_errors
def gradcheck_cmd(
    model: str = typer.Option("numpy-lstm", help="Model plugin whose gradients to check."),
    seed: int = typer.Option(0, help="Seed for the weights and the batch."),
    tolerance: float = typer.Option(1e-6, help="Largest relative error against the reference or autograd that passes."),
) -> None:
    """Check a model's gradients in float64 against the NumPy reference, torch autograd and finite differences."""
    from rich.table import Table

    from poemctl.gradcheck import gradcheck
    from poemctl.registry import MODELS

    checks = gradcheck(MODELS.get(model), seed=seed)
    table = Table("parameter", "vs NumPy reference", "vs autograd", "vs finite differences", title="max relative error")
    for c in checks:
        table.add_row(
            c.name, f"{c.reference_rel_error:.2e}", f"{c.autograd_rel_error:.2e}", f"{c.finite_diff_rel_error:.2e}"
        )
    out.print(table)
    hand, auto = (max(getattr(c, f) for c in checks) for f in ("reference_rel_error", "autograd_rel_error"))
    fd = max(c.finite_diff_rel_error for c in checks)
    ok = max(hand, auto) <= tolerance and fd <= 1e-4
    out.print(
        f"{'PASS' if ok else 'FAIL'}: max relative error {hand:.2e} vs the NumPy reference, {auto:.2e} vs autograd, "
        f"{fd:.2e} vs finite differences"
    )
    if not ok:
        raise typer.Exit(1)


@app.command("bench")
@user_errors
def bench_cmd(
    models: str = typer.Option(",".join(_B.models), help="Comma-separated models; the first is the reference."),
    device: str = typer.Option(_B.device, help="cpu or cuda."),
    batch_size: int = typer.Option(_B.batch_size, help="Poems per step."),
    steps: int = typer.Option(_B.steps, help="Timed steps per model and round (after 2 warm-up steps)."),
    repeats: int = typer.Option(_B.repeats, help="Rounds, each with a fresh process per model."),
    cuda_graphs: bool = CUDA_GRAPHS_OPT,
    fused_steps: bool = FUSED_STEPS_OPT,
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    max_poems: int = MAX_POEMS_OPT,
) -> None:
    """Training speed of each model on the course config: tokens/s, ms/step, memory, matmul bound.

    Each round starts a fresh process per model; the processes take turns step by step on the same
    batches, so a model's step and the reference's step of the same turn are about a second apart and
    machine drift cancels in their ratio. A model's figure is its median step; the ratio to the reference
    is the median over all turns, with the lowest and highest round's median beside it.
    """
    from rich.progress import Progress
    from rich.table import Table

    from poemctl.bench import WARMUP_STEPS, bench

    names = tuple(m.strip() for m in models.split(",") if m.strip())
    cfg = BenchConfig(names, device, batch_size, steps, repeats, cuda_graphs, fused_steps)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PoemctlError("--device cuda: no CUDA device is available here")
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(
            "bench: training steps", total=cfg.repeats * (WARMUP_STEPS + cfg.steps) * len(cfg.models)
        )
        data = DataConfig(corpus=corpus, cache_dir=cache_dir, max_poems=max_poems)
        results = bench(cfg, data, progress=lambda: progress.advance(task))
    title = f"course config, batch {batch_size}, {repeats} rounds × {steps} steps, models taking turns, {device}"
    table = Table(
        "model",
        "tokens/s",
        "ms/step",
        "rounds (ms/step)",
        f"× {names[0]} (range)",
        "matmul bound",
        "data loading",
        "peak MiB",
        title=title
        + (", torch-lstm from CUDA graphs" if cuda_graphs else "")
        + (", fused steps" if fused_steps else ""),
    )
    for r in results:
        table.add_row(
            r.model,
            f"{r.tokens_per_s:,.0f}",
            f"{r.ms_per_step:.1f}",
            " ".join(f"{ms:.0f}" for ms in r.run_ms),
            f"{r.ratio:.2f} ({r.ratio_range[0]:.2f}–{r.ratio_range[1]:.2f})",
            f"{r.matmul_ms / r.ms_per_step:.0%}",
            f"{r.load_fraction:.1%}",
            f"{r.peak_mib:,.0f}",
        )
    print_wide(table, 130)


@app.command()
@user_errors
def plugins() -> None:
    """List every model and optimizer plugin, with the package it comes from."""
    from rich.table import Table

    from poemctl.registry import MODELS, OPTIMIZERS

    table = Table("kind", "name", "package", "description")
    for registry in (MODELS, OPTIMIZERS):
        for p in registry.plugins():
            table.add_row(registry.kind, p.name, p.dist, p.description)
    out.print(table)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Join the lines of each paragraph of every command's docstring (Typer's help keeps them as line breaks)."""
    for info in typer_app.registered_commands:
        doc = inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(p.replace("\n", " ") for p in doc.split("\n\n"))


_reflow_help(app)
_reflow_help(data_app)


def main() -> None:
    """Console-script entry point."""
    from poemctl.allocator import keep_freed_memory

    keep_freed_memory()
    app(prog_name="poemctl")


if __name__ == "__main__":
    sys.exit(main())
