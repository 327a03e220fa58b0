"""Progress of a long command (resync, seeding): click's progress bar on a terminal, plain
lines otherwise (a log file, a CI job, ``kubectl logs``), where a bar redrawn with carriage
returns would be one unreadable line."""

from __future__ import annotations

import sys
import time
from typing import IO

import click


class Progress:
    """``progress(done, total)`` callable for code that reports its progress (``resync``)."""

    def __init__(self, label: str, *, stream: IO[str] | None = None, every: float = 5.0) -> None:
        self.label, self.stream, self.every = label, stream or sys.stderr, every
        self.terminal = self.stream.isatty()
        self._bar = None
        self._done = 0
        self._said_at = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        if self.terminal:
            if self._bar is None:
                self._bar = click.progressbar(length=max(total, 1), label=self.label, file=self.stream,
                                              show_pos=True, show_eta=True)
                self._bar.__enter__()
            self._bar.update(done - self._done)
        elif done >= total or time.monotonic() - self._said_at >= self.every:
            self._said_at = time.monotonic()
            print(f"{self.label}: {done}/{total}", file=self.stream, flush=True)
        self._done = done

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
