"""Experiment trackers beside metrics.jsonl (--report-to), through Accelerate."""

from __future__ import annotations

import warnings

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
    with warnings.catch_warnings():  # a tracker whose package is missing: our own error follows
        warnings.simplefilter("ignore")
        return {"log_with": list(names), "project_config": ProjectConfiguration(where, logging_dir=where)}


def flat(d: dict, prefix: str = "") -> dict:
    """A nested config as {"model.hidden": 512, …}, the values trackers take (lists as text)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out
