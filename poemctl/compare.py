"""The optimizer study: the same model, seed and data order under each optimizer, curves and a table."""

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
        evals = [r["test_perplexity"] for r in records if "test_perplexity" in r]
        rows.append(Row(name, evals[-1], min(evals), max(r["step"] for r in records), run))
    return rows, png
