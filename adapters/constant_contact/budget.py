"""The request budget of one application key: 4 requests a second and 10,000 a day.

Constant Contact counts both per API key, shared by every account and every task using it, and
resets the daily counter at 00:00 UTC. ``Budget`` is the interface the HTTP client needs;
``RateBudget`` is the in-process implementation (one per process, passed explicitly). A later
issue can implement ``Budget`` over a shared store (a database row, Redis) to share one key's
budget across processes and machines without touching the client.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import msgspec

from engine.errors import ConfigError, QuotaExhaustedError

__all__ = ["Budget", "BudgetStatus", "RateBudget", "next_utc_midnight"]


class BudgetStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What ``ccsync status`` shows about the key's budget."""

    requests_today: int
    daily_budget: int
    quota_exhausted_until: datetime | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.daily_budget - self.requests_today)


def next_utc_midnight(now: datetime) -> datetime:
    """The next 00:00 UTC after ``now``: when Constant Contact resets the daily counter."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class Budget(Protocol):
    """A rate budget shared by every request made with one application key."""

    async def acquire(self) -> None:
        """Wait for a slot within the per-second rate and count one request against the day.

        Raises QuotaExhaustedError when the day's budget is spent or the API said so.
        """
        ...

    def remaining_today(self) -> int:
        """Requests left today (a hint for optional work such as tracking)."""
        ...

    def mark_exhausted(self, until: datetime) -> None:
        """The API answered ``quota_exceeded``: make no call until ``until``."""
        ...

    def status(self) -> BudgetStatus: ...


class RateBudget:
    """In-process ``Budget``: a sliding one-second window plus a daily counter.

    At most ``per_second`` requests start within any one second (plus ``margin``); waiters are
    served in arrival order (one lock), so concurrent tasks share the rate fairly. Clock and
    sleep are injectable so tests drive time explicitly.
    """

    def __init__(
        self,
        per_second: float = 4.0,
        daily: int = 10_000,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = 0.15,
    ) -> None:
        if per_second <= 0:
            raise ConfigError("ctct.requests_per_second", "must be positive")
        if daily <= 0:
            raise ConfigError("ctct.daily_budget", "must be positive")
        # A fractional rate (0.5/s) becomes one request per 2 s window. The server counts
        # arrivals, not our start times: ``margin`` (seconds) widens the window so that send
        # jitter cannot squeeze N+1 arrivals into one server-side second.
        self._slots = max(1, int(per_second))
        self._window = self._slots / per_second + margin
        self._daily = daily
        self._monotonic = monotonic
        self._now = now
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._day: date = now().astimezone(UTC).date()
        self._used = 0
        self._exhausted_until: datetime | None = None

    def _roll_day(self) -> datetime:
        now = self._now().astimezone(UTC)
        if now.date() != self._day:
            self._day, self._used = now.date(), 0
        if self._exhausted_until is not None and now >= self._exhausted_until:
            self._exhausted_until = None
        return now

    def _check_quota(self) -> None:
        now = self._roll_day()
        if self._exhausted_until is not None:
            raise QuotaExhaustedError(
                "Constant Contact daily request quota exhausted",
                self._exhausted_until.isoformat(),
            )
        if self._used >= self._daily:
            self._exhausted_until = next_utc_midnight(now)
            raise QuotaExhaustedError(
                f"daily budget of {self._daily} requests spent",
                self._exhausted_until.isoformat(),
            )

    async def acquire(self) -> None:
        self._check_quota()
        async with self._lock:
            while True:
                now = self._monotonic()
                # (1 µs of slack: float rounding must not leave a waiter sleeping 0 s forever)
                while self._starts and now - self._starts[0] >= self._window - 1e-6:
                    self._starts.popleft()
                if len(self._starts) < self._slots:
                    break
                await self._sleep(self._window - (now - self._starts[0]))
            # The day may have been spent while this task waited in line.
            self._check_quota()
            self._starts.append(self._monotonic())
            self._used += 1

    def remaining_today(self) -> int:
        self._roll_day()
        if self._exhausted_until is not None:
            return 0
        return max(0, self._daily - self._used)

    def mark_exhausted(self, until: datetime) -> None:
        self._roll_day()
        self._exhausted_until = until

    def status(self) -> BudgetStatus:
        self._roll_day()
        return BudgetStatus(
            requests_today=self._used,
            daily_budget=self._daily,
            quota_exhausted_until=self._exhausted_until,
        )
