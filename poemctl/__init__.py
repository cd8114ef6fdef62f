"""poemctl: train LSTM language models on the Complete Tang Poems and write new poems with them.

The library in one line: `poemctl.load().write("月")` (docs/api.md).
"""

from __future__ import annotations

from poemctl.errors import PoemctlError

__version__ = "0.1.0"
__all__ = ["Poet", "PoemctlError", "__version__", "load"]


def __getattr__(name: str):
    # The API imports torch: only when it is asked for, so that `poemctl --help` stays quick.
    if name in ("load", "Poet"):
        from poemctl import api

        return getattr(api, name)
    raise AttributeError(f"module 'poemctl' has no attribute {name!r}")
