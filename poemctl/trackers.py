"""Experiment trackers beside metrics.jsonl (--report-to), through Accelerate."""

from __future__ import annotations

from accelerate.utils import LoggerType, ProjectConfiguration

from poemctl.errors import PoemctlError


def trackers(names: tuple[str, ...], where: str) -> dict:
    """Accelerator arguments for --report-to (none without it); an unknown tracker is a one-line error. where is
    a folder for Accelerate to check; the run's own folder replaces it once it exists."""
    if not names:
        return {}
    known = {t.value for t in LoggerType} - {"all"}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PoemctlError(f"--report-to: unknown tracker '{unknown[0]}' (trackers: {', '.join(sorted(known))})")
    return {"log_with": list(names), "project_config": ProjectConfiguration(where, logging_dir=where)}


def check_installed(accelerator, names: tuple[str, ...]) -> None:
    """A one-line error for a tracker Accelerate dropped because its package is not installed."""
    loaded = {str(getattr(t, "value", t)) for t in accelerator.log_with}
    missing = [n for n in names if n not in loaded]
    if missing:
        raise PoemctlError(f"--report-to {missing[0]}: its package is not installed (pip install {missing[0]})")


def flat(d: dict, prefix: str = "") -> dict:
    """A nested config as {"model.hidden": 512, …}, the values trackers take (lists as text)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out
