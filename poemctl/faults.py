"""How a training run stops between steps, and what it says when another process of the run is lost."""

from __future__ import annotations

import signal
import threading

import torch
from accelerate import Accelerator


class Interrupts:
    """Ctrl-C (SIGINT) or SIGTERM during a step is noted and acted on at the step's end, so that the state
    saved then holds whole steps; a second one stops at once and saves nothing (the last state stands)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._old: dict = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._old = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def _note(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def stop(self, accelerator: Accelerator) -> bool:
        """Whether any process was asked to stop (every process calls this at the same step)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor(float(self.requested), device=accelerator.device)
        return accelerator.reduce(flag, "sum").item() > 0


class StepBoundary(Exception):
    """Raised between steps when a stop was asked for."""


def peer_loss(e: RuntimeError) -> str:
    """The gist of a failed collective's error (gloo's and NCCL's are long)."""
    text = str(e)
    for gist in ("Connection reset by peer", "Connection closed by peer", "timed out", "Timed out", "Broken pipe"):
        if gist in text:
            return gist.lower() if gist.startswith("Timed") else gist
    return (text.strip().splitlines() or [type(e).__name__])[0][:100]
