"""Curves of runs: training loss and test perplexity against steps, and test perplexity against training time,
in one PNG (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

from poemctl.files import atomic_write
from poemctl.metrics import read_metrics


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_runs(run_dirs: list[Path], png: str | Path, labels: list[str] | None = None) -> dict[str, list[str]]:
    """Draw each run's loss (moving average) and test perplexity into png; returns each panel's curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or [Path(d).name for d in run_dirs]
    runs = [read_metrics(run) for run in run_dirs]
    timed = any("train_time" in r for records in runs for r in records)  # runs before it was logged: no panel
    fig, axes = plt.subplots(1, 3 if timed else 2, figsize=(16 if timed else 12, 4.5))
    ax_loss, ax_ppl = axes[:2]
    for records, label in zip(runs, labels, strict=True):
        steps = [r for r in records if "loss" in r]
        evals = [r for r in records if "test_perplexity" in r]
        window = max(1, len(steps) // 50)
        dot = "o" if len(steps) == 1 else None  # a line of one point is invisible
        ax_loss.plot([r["step"] for r in steps], _smooth([r["loss"] for r in steps], window), marker=dot, label=label)
        ax_ppl.plot([r["step"] for r in evals], [r["test_perplexity"] for r in evals], marker="o", label=label)
        if timed:
            minutes = [r.get("train_time", math.nan) / 60 for r in evals]
            axes[2].plot(minutes, [r["test_perplexity"] for r in evals], marker="o", label=label)
    ax_loss.set(xlabel="step", ylabel="training loss (cross-entropy, moving average)", title="Training loss")
    ax_ppl.set(xlabel="step", ylabel="test perplexity", yscale="log", title="Test perplexity")
    if timed:
        axes[2].set(
            xlabel="minutes of training steps (evaluations excluded)",
            ylabel="test perplexity",
            yscale="log",
            title="Test perplexity against time",
        )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in axes}
