"""metrics.jsonl: the per-step and per-evaluation records of a run, written and read back."""

from __future__ import annotations

import json
from pathlib import Path

from poemctl.errors import PoemctlError
from poemctl.files import atomic_write_bytes

FILE = "metrics.jsonl"


def _records(path: Path) -> list[dict]:
    """The records of path; a line cut short by a crash is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of run_dir/metrics.jsonl; none at all is an error."""
    path = Path(run_dir) / FILE
    try:
        records = _records(path)
    except OSError as e:
        raise PoemctlError(f"no metrics in {run_dir}: {e.strerror or e}") from None
    if not records:
        raise PoemctlError(f"{path} holds no records")
    return records


class MetricsLog:
    """Appends one JSON object per line, flushed at once so a crash loses nothing written."""

    def __init__(self, run_dir: Path | None, keep_until_step: int | None = None):
        self._f = None
        if run_dir is None:  # not the main process: writes nothing
            return
        path = run_dir / FILE
        if keep_until_step is not None and path.is_file():  # resuming: drop what came after the saved state
            kept = [r for r in _records(path) if r.get("step", 0) <= keep_until_step]
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._f = path.open("a", encoding="utf-8")

    def write(self, **record) -> None:
        """Append one record."""
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()

    def close(self) -> None:
        """Close the file."""
        if self._f is not None:
            self._f.close()
