"""RateBudget: at most N requests in any second, a daily cap, and the quota reset at 00:00 UTC."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from adapters.constant_contact import RateBudget
from adapters.constant_contact.budget import next_utc_midnight
from engine.errors import QuotaExhaustedError


class FakeTime:
    """A clock that moves only when a waiter sleeps: no real waiting in tests."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.wall = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)
        self.starts: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.wall + timedelta(seconds=self.t - 1000.0)

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


def make(ft: FakeTime, per_second: float = 4, daily: int = 10_000) -> RateBudget:
    return RateBudget(per_second, daily, monotonic=ft.monotonic, now=ft.now, sleep=ft.sleep)


@pytest.mark.asyncio
async def test_no_second_holds_more_than_four_requests_across_tasks() -> None:
    ft = FakeTime()
    budget = make(ft)

    async def worker() -> None:
        for _ in range(10):
            await budget.acquire()
            ft.starts.append(ft.t)

    await asyncio.gather(*(worker() for _ in range(3)))
    assert len(ft.starts) == 30
    for i, t in enumerate(ft.starts):
        in_window = [s for s in ft.starts[i:] if s < t + 1.0]
        assert len(in_window) <= 4
    # and it is not needlessly slow: 30 requests at 4/s (+ the jitter margin) take < 9 s
    assert ft.starts[-1] - ft.starts[0] < 9


@pytest.mark.asyncio
async def test_daily_budget_spent_raises_until_utc_midnight() -> None:
    ft = FakeTime()
    budget = make(ft, per_second=100, daily=3)
    for _ in range(3):
        await budget.acquire()
    with pytest.raises(QuotaExhaustedError) as info:
        await budget.acquire()
    assert info.value.resets_at.startswith("2026-03-02T00:00:00")
    assert budget.status().quota_exhausted_until == datetime(2026, 3, 2, tzinfo=UTC)
    assert budget.remaining_today() == 0
    ft.t += 120  # past midnight UTC
    await budget.acquire()
    assert budget.status().requests_today == 1


@pytest.mark.asyncio
async def test_api_quota_exceeded_stops_calls_until_the_reset() -> None:
    ft = FakeTime()
    budget = make(ft)
    budget.mark_exhausted(next_utc_midnight(ft.now()))
    with pytest.raises(QuotaExhaustedError):
        await budget.acquire()
    ft.t += 61
    await budget.acquire()
    assert budget.status().quota_exhausted_until is None


@pytest.mark.asyncio
async def test_fractional_rates_space_requests_out() -> None:
    ft = FakeTime()
    budget = make(ft, per_second=0.5)
    for _ in range(3):
        await budget.acquire()
        ft.starts.append(ft.t)
    assert ft.starts[1] - ft.starts[0] >= 2.0
    assert ft.starts[2] - ft.starts[1] >= 2.0
