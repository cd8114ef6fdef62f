"""Plugin registries (one per kind), filled from entry points on first use.

poemctl's own models and optimizers are entry points of the poemctl distribution, exactly like third-party
ones. POEMCTL_NO_PLUGINS=1 switches off every entry point that does not come from poemctl itself.
"""

from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from poemctl.errors import PoemctlError

OWN_DIST = "poemctl"


@dataclass
class Plugin:
    """One registered name: where it comes from, and its object once loaded."""

    name: str
    dist: str
    entry_point: EntryPoint | None = None
    obj: Any = None

    def load(self) -> Any:
        """Import the object behind the entry point (once)."""
        if self.obj is None and self.entry_point is not None:
            self.obj = self.entry_point.load()
        return self.obj

    @property
    def description(self) -> str:
        """The object's `description`, else the first line of its docstring."""
        obj = self.load()
        text = getattr(obj, "description", None) or (obj.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""


class Registry:
    """Name → plugin for one kind ("model", "optimizer"), discovered from one entry-point group."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._plugins: dict[str, Plugin] | None = None

    def _discover(self) -> dict[str, Plugin]:
        if self._plugins is None:
            self._plugins = {}
            third_party = os.environ.get("POEMCTL_NO_PLUGINS", "") in ("", "0")
            # poemctl's own entry points first, so that a third-party name clash never replaces them.
            eps = sorted(entry_points(group=self.group), key=lambda e: _dist(e) != OWN_DIST)
            for ep in eps:
                dist = _dist(ep)
                if dist != OWN_DIST and not third_party:
                    continue
                if ep.name in self._plugins:
                    warnings.warn(
                        f"{self.kind} '{ep.name}' from {dist} ignored: "
                        f"already registered by {self._plugins[ep.name].dist}",
                        stacklevel=2,
                    )
                    continue
                self._plugins[ep.name] = Plugin(ep.name, dist, entry_point=ep)
        return self._plugins

    def register(self, name: str, obj: Any, dist: str = "(runtime)") -> None:
        """Add obj under name; a name that exists already is an error."""
        plugins = self._discover()
        if name in plugins:
            raise PoemctlError(f"{self.kind} '{name}' is already registered by {plugins[name].dist}")
        plugins[name] = Plugin(name, dist, obj=obj)

    def unregister(self, name: str) -> None:
        """Remove name (tests clean up with this)."""
        self._discover().pop(name, None)

    def get(self, name: str) -> Any:
        """The object registered as name; an unknown name is an error listing what exists. PREFIX:NAME asks the
        plugin registered as PREFIX (a bridge to a family, e.g. torch:NAdam) to resolve NAME."""
        plugins = self._discover()
        prefix, colon, rest = name.partition(":")
        if colon and prefix in plugins:
            bridge = self.get(prefix)
            if not callable(getattr(bridge, "resolve", None)):
                raise PoemctlError(f"{self.kind} '{prefix}' is not a family: give it without ':{rest}'")
            return bridge.resolve(rest)
        if name not in plugins:
            names = sorted(plugins)
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PoemctlError(f"unknown {self.kind} '{name}'{hint} (available: {', '.join(names)})")
        try:
            return plugins[name].load()
        except Exception as e:  # a broken plugin must name itself, not crash with a traceback
            raise PoemctlError(f"{self.kind} '{name}' from {plugins[name].dist} failed to load: {e}") from None

    def plugins(self) -> list[Plugin]:
        """Every plugin that loads, sorted by name; one that fails to import is skipped with a warning."""
        good = []
        for p in sorted(self._discover().values(), key=lambda p: p.name):
            try:
                p.load()
            except Exception as e:
                warnings.warn(f"{self.kind} plugin '{p.name}' from {p.dist} failed to load: {e}", stacklevel=2)
                continue
            good.append(p)
        return good

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._discover())


def _dist(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "(unknown)"


MODELS = Registry("model", "poemctl.models")
OPTIMIZERS = Registry("optimizer", "poemctl.optimizers")
