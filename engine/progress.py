"""A progress line for long syncs and replays on a terminal; silent anywhere else."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``progress.update(label, n)`` redraws one line on a terminal; elsewhere it does nothing.

    Logs stay the record; this is only for a person watching. Redraws are throttled so a fast
    sync spends nothing on them.
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._counts: dict[str, int] = {}
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, label: str, add: int) -> None:
        if not self.enabled:
            return
        self._counts[label] = self._counts.get(label, 0) + add
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        parts = "  ".join(f"{k}: {v:,}" for k, v in self._counts.items())
        self.stream.write(f"\r{parts}  [{now - self._started:5.1f}s]\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._counts:
            parts = "  ".join(f"{k}: {v:,}" for k, v in self._counts.items())
            self.stream.write(f"\r{parts}  [{time.monotonic() - self._started:5.1f}s]\x1b[K\n")
            self.stream.flush()
        self._counts.clear()
