"""Atomic file writes: a crash, a power loss or a full disk never leaves a half-written file under the final
name. The data reaches the disk (fsync) before the rename, and the rename before the function returns."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

from poemctl.errors import PoemctlError


def reason(e: Exception) -> str:
    """The short reason of a failed write: an OSError's strerror, or the one safetensors wraps (its errors
    carry Rust's, e.g. 'IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    found = re.search(r'message: "([^"]+)"', str(e))
    return found.group(1) if found else (str(e).splitlines() or [type(e).__name__])[0]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path) on a temporary file beside path, then rename it onto path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise PoemctlError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself
    except (OSError, SafetensorError) as e:
        raise PoemctlError(f"cannot write {path}: {reason(e)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to path atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
