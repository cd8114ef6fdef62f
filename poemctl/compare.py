"""The optimizer study: the same model, seed and data order under each optimizer, curves and a table; with a
target perplexity, the training time each needs to reach it; with a time budget, what each reaches in it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from poemctl import plots
from poemctl.config import RunConfig
from poemctl.errors import PoemctlError
from poemctl.metrics import read_metrics
from poemctl.registry import OPTIMIZERS
from poemctl.train import train


@dataclass(frozen=True)
class Row:
    """One optimizer's run."""

    optimizer: str
    final_perplexity: float
    best_perplexity: float
    steps: int
    run_dir: Path
    training_minutes: float  # in training steps, evaluations excluded
    steps_to_target: int | None = None  # the first evaluation at or below --target-ppl, if any
    minutes_to_target: float | None = None


def compare(cfg: RunConfig, optimizers: list[str], out: str | Path, say=print) -> tuple[list[Row], Path | None]:
    """Train cfg once per optimizer, each run under out/NAME; the rows and the PNG of the curves (out/compare.png),
    or ([], None) on processes other than the main one."""
    if not optimizers:
        raise PoemctlError("--optimizers names no optimizer")
    for name in optimizers:  # every name is checked before any training
        OPTIMIZERS.get(name)
    runs = []
    for name in optimizers:
        run_cfg = replace(cfg, optim=replace(cfg.optim, name=name), train=replace(cfg.train, out=str(Path(out) / name)))
        runs.append(train(run_cfg, say=say).run_dir)
    if None in runs:  # not the main process of a launch: it writes nothing
        return [], None
    png = Path(out) / "compare.png"
    plots.plot_runs(runs, png, labels=optimizers)
    rows = []
    for name, run in zip(optimizers, runs, strict=True):
        records = read_metrics(run)
        evals = [r for r in records if "test_perplexity" in r]
        ppls = [r["test_perplexity"] for r in evals]
        hit = next((r for r in evals if cfg.train.target_ppl and r["test_perplexity"] <= cfg.train.target_ppl), None)
        rows.append(
            Row(
                name,
                ppls[-1],
                min(ppls),
                max(r["step"] for r in records),
                run,
                max(r.get("train_time", 0.0) for r in records) / 60,
                hit["step"] if hit else None,
                hit.get("train_time", 0.0) / 60 if hit else None,
            )
        )
    return rows, png
