"""The `poemctl` command line: thin Typer commands that build configs and call the modules that do the work."""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import math
import sys
import typing
import warnings
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from poemctl.config import (
    PARTS,
    SCHEDULES,
    STRATEGIES,
    BenchConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    read_recipe,
    to_toml,
    with_values,
)
from poemctl.errors import PoemctlError, TrainingStopped

app = typer.Typer(
    help="Train LSTM language models on the Complete Tang Poems (全唐诗) and write new poems with them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Get and inspect the corpus.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from poemctl import __version__

        out.print(f"poemctl {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print poemctl's version and exit."
    ),
) -> None:
    pass


# Warnings (a plugin that fails to import, say) as one line each, without the source line.
warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"

_D, _T, _O, _M, _B = DataConfig(), TrainConfig(), OptimConfig(), ModelConfig(), BenchConfig()


def choices(name: str, values) -> type[enum.Enum]:
    """An option type of fixed values (Typer lists them in --help, completes and checks them)."""
    return enum.Enum(name, {v: v for v in values}, type=str)


def plain(value):
    """An option's value as the config takes it: a choice's string ("" for a choice left out)."""
    return value.value if isinstance(value, enum.Enum) else value


ScheduleChoice = choices("ScheduleChoice", SCHEDULES)
PrecisionChoice = choices("PrecisionChoice", ("no", "bf16", "fp16"))
SplitChoice = choices("SplitChoice", ("test", "train"))
DeviceChoice = choices("DeviceChoice", ("cpu", "cuda"))
StrategyChoice = choices("StrategyChoice", STRATEGIES)
TrackerChoice = choices(
    "TrackerChoice", ("tensorboard", "trackio", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab")
)

JSON_OPT = typer.Option(False, "--json", help="Print one JSON document on stdout instead (notes stay on stderr).")


def print_json(document) -> None:
    """document as JSON on stdout, alone; NaN and infinities (not JSON) as null."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return str(x) if isinstance(x, Path) else x

    sys.stdout.write(json.dumps(clean(document), ensure_ascii=False, indent=2) + "\n")


def print_wide(table, width: int) -> None:
    """Print a table at least width columns wide, so that names are never cut (a pipe reports 80)."""
    Console(soft_wrap=True, width=max(out.width, width)).print(table)


def user_errors(fn):
    """Turn PoemctlError into one line on stderr and exit code 2, and a training run that stopped early (a NaN
    loss, Ctrl-C) into its one-line reason and exit code 1; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PoemctlError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except TrainingStopped as e:
            err.print(f"[bold red]stopped:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(1) from None

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
    timeout: float = typer.Option(1800.0, help="Give up when the whole download takes longer (seconds)."),
) -> None:
    """Download the 全唐诗 JSON files (57,607 poems), checking that each one parses."""
    if not timeout > 0:
        raise PoemctlError(f"--timeout must be greater than 0, got {timeout}")
    from rich.progress import Progress

    from poemctl.corpus import download, manifest

    n = len(manifest()["files"])
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("downloading 全唐诗", total=n)
        paths = download(source, dest, progress=lambda: progress.advance(task), timeout=timeout)
    out.print(f"{len(paths)} files in {paths[0].parent}")


@data_app.command("info")
@user_errors
def data_info(
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    max_poems: int = typer.Option(_D.max_poems, help="Use only the first N poems (0: all)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Summarise the corpus under the course preset: files, poems, vocabulary, split sizes, padding."""
    from rich.table import Table

    from poemctl.corpus import corpus_files
    from poemctl.data import load_corpus

    data = load_corpus(DataConfig(corpus=corpus, cache_dir=cache_dir, max_poems=max_poems))
    rows = len(data.train) + len(data.test)
    scored = float((data.train[:, 1:] != data.vocab.pad_id).float().mean())
    if as_json:
        print_json(
            {
                "corpus": corpus,
                "files": len(corpus_files(corpus)),
                "hash": data.corpus_hash,
                "poems": rows,
                "vocabulary": len(data.vocab),
                "train": len(data.train),
                "test": len(data.test),
                "row_length": data.train.shape[1],
                "scored_share": scored,
            }
        )
        return
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


def make_config(base: RunConfig | None = None, **options) -> RunConfig:
    """base (default: RunConfig()) with CLI options put in, each routed to the config field of the same name."""
    renames = {"optimizer": ("optim", "name"), "model": ("train", "model"), "out_dir": ("train", "out")}
    fields = {part: {f.name for f in dataclasses.fields(kind)} for part, kind in PARTS.items()}
    values: dict[str, dict] = {part: {} for part in PARTS}
    for name, value in options.items():
        part, field = renames.get(name) or next((p, name) for p in PARTS if name in fields[p])
        values[part][field] = plain(value)
    return with_values(base or RunConfig(), values, "the command line")


def _given(ctx: typer.Context, options: dict) -> dict:
    """The options given on the command line (not left at their defaults)."""
    # by name: Typer carries its own copy of click, whose ParameterSource is not click's
    return {k: v for k, v in options.items() if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", help="A TOML recipe ([data], [model], [optim], [train]); options given here override it."
    ),
    print_config: bool = typer.Option(False, help="Print the whole configuration as TOML and exit without training."),
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
    embedding_dropout: float = typer.Option(
        _M.embedding_dropout, help="In training, drop each character's embedding with this probability."
    ),
    output_dropout: float = typer.Option(
        _M.output_dropout, help="In training, drop entries of h_t before the output layer with this probability."
    ),
    tie_weights: bool = typer.Option(
        _M.tie_weights, help="Share one matrix between the embeddings and the output layer (needs E = H)."
    ),
    schedule: ScheduleChoice = typer.Option(
        _T.schedule,
        help="Learning rate after warmup: constant, or cosine or linear decay to the last step, or plateau.",
    ),
    warmup_steps: int = typer.Option(_T.warmup_steps, help="Raise the learning rate linearly over this many steps."),
    seed: int = SEED_OPT,
    eval_every: int = EVAL_OPT,
    save_every: int = typer.Option(_T.save_every, help="Save the training state every N steps (0: epoch ends)."),
    log_every: int = typer.Option(
        _T.log_every, help="When the output is not a terminal (a log): one plain progress line every N steps."
    ),
    resume: Path | None = typer.Option(
        None, help="Continue the run in this folder from its last saved state (its own options apply)."
    ),
    clip: float = typer.Option(_T.clip, help="Clip the gradient norm to this (0: off)."),
    grad_accum: int = typer.Option(_T.grad_accum, help="Accumulate gradients over N batches per step."),
    mixed_precision: PrecisionChoice = typer.Option(_T.mixed_precision, help="Mixed precision, through Accelerate."),
    cuda_graphs: bool = CUDA_GRAPHS_OPT,
    fused_steps: bool = FUSED_STEPS_OPT,
    out_dir: str = OUT_OPT,
    cpu: bool = CPU_OPT,
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    traditional: bool = typer.Option(_D.traditional, help="Keep traditional characters (no OpenCC t2s)."),
    keep_commas: bool = typer.Option(_D.keep_commas, help="Keep '，' (the course deletes it)."),
    rhyme_marks: bool = typer.Option(
        _D.rhyme_marks, help="With --control-tokens: the rhyme group's token again before each even line's rhyme."
    ),
    control_tokens: bool = typer.Option(
        _D.control_tokens, help="Write each poem's form, rhyme group and tone pattern as tokens in front of it."
    ),
    forms: str = typer.Option(
        ",".join(_D.forms), help="Keep only poems of these forms, comma-separated: 七绝, 五绝, 七律, 五律, none."
    ),
    report_to: list[TrackerChoice] = typer.Option(
        [],
        help="Also log to this Accelerate tracker (repeatable); each needs its own package.",
    ),
    target_ppl: float = typer.Option(_T.target_ppl, help="Stop at the first evaluation at or below this perplexity."),
    time_budget: float = typer.Option(
        _T.time_budget, help="Stop after this many minutes of training steps (evaluations excluded)."
    ),
    dist_timeout: int = typer.Option(
        _T.dist_timeout, help="Seconds a process of a multi-process run waits for the others before giving up."
    ),
    init_from: str = typer.Option(
        _T.init_from, help="Start from this checkpoint's weights and vocabulary (e.g. a quatrain stage)."
    ),
    min_freq: int = typer.Option(_D.min_freq, help="Characters seen fewer times become <unk>."),
    seq_len: int = typer.Option(_D.seq_len, help="Cut / front-pad every poem to this many characters."),
    max_poems: int = MAX_POEMS_OPT,
) -> None:
    """Train a model (course defaults: Adam, lr 0.01, batch 64, H=E=128, 10 epochs), or resume a run."""
    options = {k: v for k, v in locals().items() if k not in ("ctx", "config", "print_config", "resume")}
    if config is not None:
        options = _given(ctx, options)
    if "opt_arg" in options:
        options["extra"] = parse_opt_args(options.pop("opt_arg"))
    if "forms" in options:
        options["forms"] = tuple(f.strip() for f in options["forms"].split(",") if f.strip())
    if "report_to" in options:
        options["report_to"] = tuple(plain(t) for t in options["report_to"])
    if resume is not None and (config is not None or print_config):
        raise PoemctlError("--resume uses the run's own configuration: give it without --config or --print-config")
    extend = {}
    if resume is not None:  # the run's own configuration; only its length may change
        given = _given(ctx, options)
        extend = {k: given.pop(k) for k in ("max_steps", "epochs") if k in given}
        if given:
            names = ", ".join("--" + k.replace("_", "-") for k in given)
            raise PoemctlError(
                f"--resume continues a run with its own configuration; only --max-steps and --epochs may "
                f"extend it (given: {names})"
            )
    cfg = None if resume else make_config(read_recipe(config) if config else None, **options)
    if print_config:
        out.print(to_toml(cfg), end="", highlight=False, markup=False)
        return
    from poemctl.train import train as run_training

    result = run_training(cfg, say=err.print, resume=resume, extend=extend)
    if result.run_dir is None:  # not the main process: it prints nothing
        raise typer.Exit(0)
    out.print(
        f"{result.steps} steps; test perplexity {result.last_perplexity:.1f} "
        f"(best {result.best_perplexity:.1f}); checkpoints in {result.run_dir}",
        highlight=False,
    )


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
    target_ppl: float = typer.Option(
        _T.target_ppl, help="Stop each run at the first evaluation at or below this perplexity; table the time to it."
    ),
    time_budget: float = typer.Option(
        _T.time_budget, help="Give each run this many minutes of training steps; table the best perplexity."
    ),
    out_dir: str = typer.Option("runs/compare", "--out", help="Folder that receives one run per optimizer."),
    cpu: bool = CPU_OPT,
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    max_poems: int = MAX_POEMS_OPT,
) -> None:
    """Train the same model, seed and data order under each optimizer; plot the curves and tabulate."""
    options = dict(locals())
    from rich.table import Table

    from poemctl.compare import compare as run_compare

    names = [n.strip() for n in options.pop("optimizers").split(",") if n.strip()]
    base = options.pop("out_dir")
    rows, png = run_compare(make_config(**options), names, base, say=err.print)
    if png is None:  # not the main process: it prints nothing
        raise typer.Exit(0)
    target = options["target_ppl"]
    reached = [f"minutes to {target:g}", f"steps to {target:g}"] if target else []
    table = Table("optimizer", "final test ppl", "best test ppl", "steps", "training minutes", *reached, "run")
    for r in rows:
        to_target = [f"{r.minutes_to_target:.2f}", str(r.steps_to_target)] if r.steps_to_target else ["–", "–"]
        table.add_row(
            r.optimizer,
            f"{r.final_perplexity:.1f}",
            f"{r.best_perplexity:.1f}",
            str(r.steps),
            f"{r.training_minutes:.2f}",
            *(to_target if target else []),
            str(r.run_dir),
        )
    print_wide(table, 120)
    out.print(f"curves: {png}")


@app.command()
@user_errors
def plot(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (each with a metrics.jsonl)."),
    output: Path = typer.Option(Path("curves.png"), "--output", "-o", help="PNG file to write."),
    label: list[str] = typer.Option([], help="The legend's name of each run, in order (default: its folder's)."),
) -> None:
    """Draw the training-loss and test-perplexity curves of runs into one PNG."""
    from poemctl.plots import plot_runs

    if label and len(label) != len(run_dirs):
        raise PoemctlError(f"give one --label per run: {len(run_dirs)} runs, {len(label)} labels")
    plot_runs(run_dirs, output, labels=label or None)
    out.print(f"curves: {output}")


# The options of `sample` and `evaluate` that map onto SampleConfig's fields, declared once: each command gets
# them as one dict (`with_options`). num and seed are each command's own (their defaults differ).
_S = SampleConfig()
SAMPLING_OPTIONS = {
    "lines": (int, typer.Option(_S.lines, help="Number of lines (an --acrostic sets it).")),
    "chars": (int, typer.Option(_S.chars, help="Characters per line: 5 (五言) or 7 (七言).")),
    "strategy": (
        StrategyChoice | None,
        typer.Option(None, help="course (top 5, then top 10; the default), sample (the default with the next three)."),
    ),
    "temperature": (float, typer.Option(_S.temperature, help="Softmax temperature (implies --strategy sample).")),
    "top_k": (int, typer.Option(_S.top_k, help="Keep the k likeliest characters (implies sample; 0: off).")),
    "top_p": (
        float,
        typer.Option(_S.top_p, help="Keep the smallest set of probability ≥ p (implies sample; 1: off)."),
    ),
    "acrostic": (
        str,
        typer.Option(_S.acrostic, help="藏头诗: line k starts with the k-th of these characters, e.g. 春夏秋冬."),
    ),
    "rhyme": (
        bool,
        typer.Option(_S.rhyme, help="End the even lines (and line 1 when its pattern asks) in one 平水韵 group."),
    ),
    "tones": (bool, typer.Option(_S.tones, help="Follow a regular 平仄 pattern of 五言/七言 绝句.")),
    "rhyme_group": (
        str,
        typer.Option(
            _S.rhyme_group,
            help="Rhyme in this 平水韵 group: 东 冬 江 支 微 鱼 虞 齐 佳 灰 真 文 元 寒 删 "
            "先 萧 肴 豪 歌 麻 阳 庚 青 蒸 尤 侵 覃 盐 咸 (or 上平聲一東 …). A model trained with --control-tokens "
            "is told it; any other is held to it.",
        ),
    ),
}
CHECKPOINT_OPTIONS = {
    "ckpt": (
        str | None,
        typer.Option(
            None, help="Checkpoint: a file, a Hub folder or hf:USER/NAME (default: the latest run's best, in --runs)."
        ),
    ),
    "runs": (
        str,
        typer.Option(_T.out, "--runs", "--out", help="Where to look for the most recent run (train's --out)."),
    ),
    "model": (str | None, typer.Option(None, help="Run the checkpoint in this model (default: its own).")),
}


def with_options(options: dict, into: str):
    """Add options (name → (type, typer.Option)) to a command, which receives them as one dict, `into`."""

    def decorate(fn):
        signature = inspect.signature(fn)
        params = [p for p in signature.parameters.values() if p.name != into]
        params += [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=t)
            for n, (t, o) in options.items()
        ]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            kwargs[into] = {name: plain(kwargs.pop(name)) for name in options}
            return fn(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)
        hints = {k: v for k, v in typing.get_type_hints(fn).items() if k != into}
        wrapper.__annotations__ = {**hints, **{name: kind for name, (kind, _) in options.items()}}
        return wrapper

    return decorate


def _load(ckpt: str | None, runs: str, model: str | None):
    """The checkpoint's model and metadata: ckpt, else the most recent run's best under runs, else the model
    bundled with poemctl (saying so on stderr)."""
    from poemctl import checkpoint

    path, bundled = checkpoint.find(ckpt, runs)
    if bundled:
        err.print(f"no run under {runs}/: writing with the model bundled with poemctl", highlight=False)
    return checkpoint.load(path, model)


@app.command()
@user_errors
@with_options(CHECKPOINT_OPTIONS, "checkpoint")
@with_options(SAMPLING_OPTIONS, "sampling")
def sample(
    first: str = typer.Argument(
        "月", help="The poem's first character, or its beginning: 春风, a whole line or more (not with --acrostic)."
    ),
    num: int = typer.Option(1, help="How many poems to write."),
    seed: int | None = typer.Option(None, help="Seed: the same seed and options write the same poems."),
    as_json: bool = JSON_OPT,
    sampling: dict | None = None,
    checkpoint: dict | None = None,
) -> None:
    """Write poems that begin with FIRST (default: one 七言绝句, 4 lines of 7 characters)."""
    from poemctl.sampling import format_poem, iter_poems, write_poems

    cfg = SampleConfig(**sampling, num=num, seed=seed)  # bad numbers fail before the checkpoint is read
    net, meta = _load(**checkpoint)
    if as_json:
        poems = write_poems(net, meta.vocab, first, cfg, data=meta.config.data)
        print_json({"poems": [{"lines": p, "text": format_poem(p)} for p in poems], "options": asdict(cfg)})
        return
    for k, batch in enumerate(iter_poems(net, meta.vocab, first, cfg, data=meta.config.data)):
        text = "\n\n".join(format_poem(p) for p in batch)
        out.print(("\n" if k else "") + text, highlight=False)  # as they come: --num may be large


@app.command()
@user_errors
@with_options(CHECKPOINT_OPTIONS, "checkpoint")
@with_options(SAMPLING_OPTIONS, "sampling")
def evaluate(
    first: str = typer.Argument(
        "", help="Begin every poem with this (as sample's FIRST; default: 月, 山, 春, … in turn)."
    ),
    num: int = typer.Option(1000, help="How many poems to write and score."),
    seed: int | None = typer.Option(0, help="Seed for the poems."),
    corpus: str | None = typer.Option(None, help="Corpus for the copy rate (default: the checkpoint's)."),
    text: Path | None = typer.Option(
        None, help="Score the poems of this UTF-8 file instead (one a line, or one a paragraph)."
    ),
    real: bool = typer.Option(False, help="Score N real poems of --lines × --chars from the test split instead."),
    as_json: bool = JSON_OPT,
    sampling: dict | None = None,
    checkpoint: dict | None = None,
) -> None:
    """Write N poems and report form validity, rhyme and tone rates, copy rate, distinct-1/2, time per poem;
    or score poems from a file (--text) or real poems of the test split (--real) the same way."""
    from rich.table import Table

    from poemctl import evaluate as ev

    cfg = SampleConfig(**sampling, num=num, seed=seed)
    if text is not None and real:
        raise PoemctlError("give --text or --real, not both")
    net, meta = _load(**checkpoint)
    lines = len(cfg.acrostic) or cfg.lines

    def say(message: str) -> None:  # only for the checkpoint's own corpus: one the user names must be there
        err.print(message, markup=False, highlight=False)

    say = say if corpus is None else None
    if text is not None:
        stats, what = ev.score_poems(meta, ev.read_poem_file(text), lines, cfg.chars, corpus, say), str(text)
    elif real:
        poems = ev.real_poems(meta, lines, cfg.chars, num, seed or 0, corpus)
        stats, what = ev.score_poems(meta, poems, lines, cfg.chars, corpus, say), "real poems of the test split"
    else:
        stats, what = ev.evaluate(net, meta, cfg, first, corpus, say), cfg.strategy
    if as_json:
        print_json({**stats.as_dict(), "what": what, "lines": lines, "chars": cfg.chars})
        return
    table = Table("statistic", "value", title=f"{stats.poems} poems, {lines}×{cfg.chars}, {what}")
    for key, value in stats.as_dict().items():
        shown = str(value) if key == "poems" else f"{value:.2f}" if key == "ms_per_poem" else f"{value:.1%}"
        shown = "not measured" if isinstance(value, float) and math.isnan(value) else shown
        table.add_row(key, shown)
    out.print(table)


@app.command("perplexity")
@user_errors
def perplexity_cmd(
    ckpt: str = typer.Argument(..., help="A poemctl checkpoint: a .safetensors file, a Hub folder, hf:USER/NAME."),
    split: SplitChoice = typer.Option("test", help="Which split to score."),
    text: Path | None = typer.Option(None, help="Score this UTF-8 file instead: one poem per line."),
    corpus: str | None = typer.Option(None, help="Corpus folder (default: the one the checkpoint was trained on)."),
    model: str | None = typer.Option(None, help="Run the checkpoint in this model (default: its own)."),
    batch_size: int = typer.Option(256, help="Poems per batch."),
    as_json: bool = JSON_OPT,
) -> None:
    """Print the perplexity of a checkpoint on its test split (rebuilt from its metadata) or on a file."""
    from poemctl import checkpoint
    from poemctl.scoring import score_checkpoint

    net, meta = checkpoint.load(checkpoint.find(ckpt)[0], model)
    score = score_checkpoint(net, meta, plain(split), text, corpus, batch_size)
    if score.other_corpus:
        err.print("[yellow]warning:[/] this corpus differs from the one the checkpoint was trained on")
    if score.unknown_share > UNKNOWN_WARNING:
        err.print(
            f"[yellow]warning:[/] {score.unknown_share:.1%} of the scored characters are unknown to this "
            "checkpoint's vocabulary (<unk>): the perplexity says little about this text",
            highlight=False,
        )
    if as_json:
        print_json({**asdict(score), "unknown_share": score.unknown_share, "checkpoint": str(ckpt)})
        return
    ppl = f"{score.perplexity:.2f}" if math.isfinite(score.perplexity) else str(score.perplexity)
    out.print(
        f"perplexity {ppl} over {score.tokens} tokens ({score.source}, {score.poems} poems; "
        f"{score.unknown_share:.1%} unknown characters)",
        highlight=False,
    )


UNKNOWN_WARNING = 0.05  # the test split of the full corpus has about 0.1% <unk>


@app.command("adjust")
@user_errors
def adjust_cmd(
    ckpt: str = typer.Argument(..., help="A poemctl checkpoint: a .safetensors file, a Hub folder, hf:USER/NAME."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Where to write the adjusted checkpoint."),
    tau: float = typer.Option(0.4, help="How far to discount common characters: the bias becomes b − τ·log π."),
    corpus: str | None = typer.Option(None, help="Corpus folder (default: the one the checkpoint was trained on)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Tilt a checkpoint's output layer away from the characters common everywhere (post-hoc logit adjustment,
    docs/model-card.md): more varied poems under the course rule, at some cost in perplexity."""
    from poemctl import checkpoint
    from poemctl.adjust import adjust

    done = adjust(checkpoint.find(ckpt)[0], tau, out_path, corpus)
    if as_json:
        print_json({**asdict(done), "path": str(done.path)})
        return
    out.print(
        f"wrote {done.path} (τ {done.total_tau:g}); test perplexity {done.perplexity_before:.2f} → "
        f"{done.perplexity_after:.2f}",
        highlight=False,
    )


@app.command("gradcheck")
@user_errors
def gradcheck_cmd(
    model: str = typer.Option("numpy-lstm", help="Model plugin whose gradients to check."),
    seed: int = typer.Option(0, help="Seed for the weights and the batch."),
    tolerance: float = typer.Option(1e-6, help="Largest relative error against the reference or autograd that passes."),
    as_json: bool = JSON_OPT,
) -> None:
    """Check a model's gradients in float64 against the NumPy reference, torch autograd and finite differences."""
    from rich.table import Table

    from poemctl.gradcheck import gradcheck
    from poemctl.registry import MODELS

    checks = gradcheck(MODELS.get(model), seed=seed)
    hand, auto = (max(getattr(c, f) for c in checks) for f in ("reference_rel_error", "autograd_rel_error"))
    fd = max(c.finite_diff_rel_error for c in checks)
    ok = max(hand, auto) <= tolerance and fd <= 1e-4
    if as_json:
        print_json({"model": model, "pass": ok, "checks": [asdict(c) for c in checks]})
        if not ok:
            raise typer.Exit(1)
        return
    table = Table("parameter", "vs NumPy reference", "vs autograd", "vs finite differences", title="max relative error")
    for c in checks:
        table.add_row(
            c.name, f"{c.reference_rel_error:.2e}", f"{c.autograd_rel_error:.2e}", f"{c.finite_diff_rel_error:.2e}"
        )
    out.print(table)
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
    device: DeviceChoice = typer.Option(_B.device, help="Where to time the models."),
    batch_size: int = typer.Option(_B.batch_size, help="Poems per step."),
    steps: int = typer.Option(_B.steps, help="Timed steps per model and round (after 2 warm-up steps)."),
    repeats: int = typer.Option(_B.repeats, help="Rounds, each with a fresh process per model."),
    cuda_graphs: bool = CUDA_GRAPHS_OPT,
    fused_steps: bool = FUSED_STEPS_OPT,
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    max_poems: int = MAX_POEMS_OPT,
    as_json: bool = JSON_OPT,
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
    cfg = BenchConfig(names, plain(device), batch_size, steps, repeats, cuda_graphs, fused_steps)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PoemctlError("--device cuda: no CUDA device is available here")
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(
            "bench: training steps", total=cfg.repeats * (WARMUP_STEPS + cfg.steps) * len(cfg.models)
        )
        data = DataConfig(corpus=corpus, cache_dir=cache_dir, max_poems=max_poems)
        results = bench(cfg, data, progress=lambda: progress.advance(task))
    if as_json:
        print_json({"config": asdict(cfg), "results": [asdict(r) for r in results]})
        return
    title = f"course config, batch {batch_size}, {repeats} rounds × {steps} steps, models taking turns, {cfg.device}"
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
def serve(
    ckpt: str | None = typer.Option(
        None, help="Checkpoint: a file, a Hub folder or hf:USER/NAME (default: as sample)."
    ),
    runs: str = typer.Option(_T.out, "--runs", "--out", help="Where to look for the most recent run."),
    host: str = typer.Option("127.0.0.1", help="Address to serve on (0.0.0.0: every interface)."),
    port: int = typer.Option(7860, help="Port to serve on."),
) -> None:
    """Serve a web page that writes poems (Gradio; pip install 'poemctl[web]'), until Ctrl-C."""
    from poemctl.web import serve as run_server

    if not 0 < port < 65536:
        raise PoemctlError(f"--port must be in 1–65535, got {port}")
    run_server(ckpt, runs, host, port)


@app.command()
@user_errors
def export(
    ckpt: str = typer.Argument(..., help="The checkpoint to export (a file, or hf:USER/NAME)."),
    folder: Path = typer.Argument(..., help="The folder to write (new or empty)."),
) -> None:
    """Write a checkpoint in the Hugging Face Hub layout: model.safetensors, config.json, README.md (model card)."""
    from poemctl import checkpoint, hub

    out.print(f"Hub folder: {hub.export(checkpoint.find(ckpt)[0], folder)}", highlight=False)


@app.command()
@user_errors
def push(
    folder: Path = typer.Argument(..., help="A folder written by poemctl export."),
    repo: str = typer.Option(..., help="The Hub model repository, USER/NAME (created if need be)."),
    private: bool = typer.Option(False, help="Create the repository private."),
) -> None:
    """Upload a Hub folder to the Hugging Face Hub (log in first: huggingface-cli login, or HF_TOKEN)."""
    from poemctl import hub

    out.print(f"pushed to {hub.push(folder, repo, private)}", highlight=False)


@app.command()
@user_errors
def plugins(as_json: bool = JSON_OPT) -> None:
    """List every model and optimizer plugin, with the package it comes from."""
    from rich.table import Table

    from poemctl.registry import MODELS, OPTIMIZERS

    if as_json:
        found = [(r.kind, p) for r in (MODELS, OPTIMIZERS) for p in r.plugins()]
        print_json([{"kind": k, "name": p.name, "package": p.dist, "description": p.description} for k, p in found])
        return

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
