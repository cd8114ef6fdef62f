"""progress.py: a bar on a terminal's stderr, nothing in a log."""

import io
import sys

from poemctl import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_on_a_terminal_and_nothing_in_a_log(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress.bar("scoring the test split", 3) as advance:
        advance()
    assert log.getvalue() == ""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress.bar("scoring the test split", 3) as advance:
        for _ in range(3):
            advance()
    assert "scoring the test split" in terminal.getvalue()
