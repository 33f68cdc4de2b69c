"""Fixtures for the event-log suite: a fresh log file per test and a clock the test drives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from engine.log import EventLog
from tests.log.samples import T0


class Clock:
    """A clock the test moves by hand, so recorded_at is known exactly."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest_asyncio.fixture
async def log(log_path: Path, clock: Clock) -> AsyncIterator[EventLog]:
    async with await EventLog.open(log_path, clock=clock) as opened:
        yield opened
