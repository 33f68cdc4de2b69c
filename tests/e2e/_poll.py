"""Waiting, from a test, for something another process does: poll with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

_T = TypeVar("_T")
DEADLINE = 30.0  # seconds; generous for a loaded 2-core machine, never reached when all is well
POLL = 0.05


def wait_for(probe: Callable[[], _T | None], what: str, *, poll: float = POLL) -> _T:
    """Poll ``probe`` until it returns a value; fail naming ``what`` after the deadline."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        value = probe()
        if value is not None:
            return value
        time.sleep(poll)
    pytest.fail(f"waited {DEADLINE}s for {what}")
