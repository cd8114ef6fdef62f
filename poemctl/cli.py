"""The `poemctl` command line: thin Typer commands that build configs and call the modules that do the work."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import typer
from rich.console import Console

from poemctl.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
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

_D, _T, _O, _M = DataConfig(), TrainConfig(), OptimConfig(), ModelConfig()


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


@app.command()
@user_errors
def train(
    model: str = typer.Option(_T.model, help="Model plugin (see `poemctl plugins`)."),
    optimizer: str = typer.Option(_O.name, help="Optimizer plugin: sgd, momentum, adagrad, adam, adamw, rmsprop…"),
    epochs: int = typer.Option(_T.epochs, help="Passes over the training split."),
    max_steps: int = typer.Option(_T.max_steps, help="Stop after this many optimizer steps (0: no limit)."),
    batch_size: int = typer.Option(_T.batch_size, help="Poems per step (per process)."),
    lr: float = typer.Option(_O.lr, help="Learning rate."),
    momentum: float = typer.Option(_O.momentum, help="Momentum μ for the momentum optimizer."),
    weight_decay: float = typer.Option(_O.weight_decay, help="Weight decay (L2; decoupled for adamw)."),
    hidden: int = typer.Option(_M.hidden, help="Hidden size H of the LSTM."),
    embedding: int = typer.Option(_M.embedding, help="Embedding size E."),
    seed: int = typer.Option(_T.seed, help="Seed for initialisation and data order."),
    eval_every: int = typer.Option(_T.eval_every, help="Test perplexity every N steps (0: each epoch end)."),
    clip: float = typer.Option(_T.clip, help="Clip the gradient norm to this (0: off)."),
    grad_accum: int = typer.Option(_T.grad_accum, help="Accumulate gradients over N batches per step."),
    mixed_precision: str = typer.Option(_T.mixed_precision, help="no, bf16 or fp16 (through Accelerate)."),
    out_dir: str = typer.Option(_T.out, "--out", help="Folder that receives the run folder."),
    cpu: bool = typer.Option(_T.cpu, help="Train on the CPU even where a GPU exists."),
    corpus: str = CorpusOpt,
    cache_dir: str = CacheOpt,
    traditional: bool = typer.Option(_D.traditional, help="Keep traditional characters (no OpenCC t2s)."),
    keep_commas: bool = typer.Option(_D.keep_commas, help="Keep '，' (the course deletes it)."),
    min_freq: int = typer.Option(_D.min_freq, help="Characters seen fewer times become <unk>."),
    seq_len: int = typer.Option(_D.seq_len, help="Cut / front-pad every poem to this many characters."),
    max_poems: int = typer.Option(_D.max_poems, help="Use only the first N poems (0: all)."),
) -> None:
    """Train a model (course defaults: Adam, lr 0.01, batch 64, H=E=128, 10 epochs)."""
    from poemctl.train import TrainingStopped
    from poemctl.train import train as run_training

    cfg = RunConfig(
        data=DataConfig(
            corpus=corpus,
            cache_dir=cache_dir,
            traditional=traditional,
            keep_commas=keep_commas,
            min_freq=min_freq,
            seq_len=seq_len,
            max_poems=max_poems,
        ),
        model=ModelConfig(embedding=embedding, hidden=hidden),
        optim=OptimConfig(name=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay),
        train=TrainConfig(
            model=model,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            eval_every=eval_every,
            clip=clip,
            seed=seed,
            out=out_dir,
            cpu=cpu,
            grad_accum=grad_accum,
            mixed_precision=mixed_precision,
        ),
    )
    try:
        result = run_training(cfg, say=err.print)
    except TrainingStopped as e:
        err.print(f"[bold red]stopped:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if result.run_dir is not None:
        out.print(
            f"{result.steps} steps; test perplexity {result.last_perplexity:.1f} "
            f"(best {result.best_perplexity:.1f}); checkpoints in {result.run_dir}",
            highlight=False,
        )


@app.command()
@user_errors
def sample(
    first: str = typer.Argument(..., help="The poem's first character, e.g. 月."),
    lines: int = typer.Option(4, help="Number of lines."),
    chars: int = typer.Option(7, help="Characters per line: 5 (五言) or 7 (七言)."),
    num: int = typer.Option(1, help="How many poems to write."),
    seed: int | None = typer.Option(None, help="Seed: the same seed writes the same poem."),
    ckpt: Path | None = typer.Option(None, help="Checkpoint (default: best of the most recent run in --runs)."),
    runs: str = typer.Option(_T.out, help="Where to look for the most recent run."),
    model: str | None = typer.Option(None, help="Run the checkpoint in this model (default: its own)."),
) -> None:
    """Write a poem that starts with FIRST (default: a 七言绝句, 4 lines of 7 characters)."""
    from poemctl import checkpoint
    from poemctl.sampling import format_poem, write_poems

    if len(first) != 1:
        raise PoemctlError(f"give one start character, got '{first}'")
    if lines < 1:
        raise PoemctlError(f"--lines must be at least 1, got {lines}")
    if chars not in (5, 7):
        raise PoemctlError(f"--chars must be 5 or 7, got {chars}")
    if num < 1:
        raise PoemctlError(f"--num must be at least 1, got {num}")
    path = ckpt or checkpoint.latest(runs)
    net, meta = checkpoint.load(path, model)
    poems = write_poems(
        net,
        meta.vocab,
        first,
        lines=lines,
        chars=chars,
        num=num,
        seed=seed,
        seq_len=meta.config.data.seq_len,
        keep_commas=meta.config.data.keep_commas,
    )
    out.print("\n\n".join(format_poem(p) for p in poems), highlight=False)


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
    tolerance: float = typer.Option(1e-6, help="Largest relative error against autograd that passes."),
) -> None:
    """Check a model's gradients in float64 against torch autograd and centred finite differences."""
    from rich.table import Table

    from poemctl.gradcheck import gradcheck
    from poemctl.registry import MODELS

    checks = gradcheck(MODELS.get(model), seed=seed)
    table = Table("parameter", "vs autograd (max rel)", "vs finite differences (max rel)")
    for c in checks:
        table.add_row(c.name, f"{c.autograd_rel_error:.2e}", f"{c.finite_diff_rel_error:.2e}")
    out.print(table)
    worst = max(c.autograd_rel_error for c in checks)
    fd = max(c.finite_diff_rel_error for c in checks)
    ok = worst <= tolerance and fd <= 1e-4
    out.print(f"{'PASS' if ok else 'FAIL'}: max relative error {worst:.2e} vs autograd, {fd:.2e} vs finite differences")
    if not ok:
        raise typer.Exit(1)


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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="poemctl")


if __name__ == "__main__":
    sys.exit(main())
