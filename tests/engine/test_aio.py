"""The engine's asyncio helpers: prefetching a page source, and gathering with cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine._aio import InFlight, gather_or_cancel, prefetch

pytestmark = pytest.mark.asyncio


async def test_prefetch_keeps_the_order_and_reaches_the_end() -> None:
    async def pages() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    assert [p async for p in prefetch(pages(), depth=3)] == list(range(10))


async def test_prefetch_hands_over_the_items_before_an_error_then_the_error() -> None:
    async def pages() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise RuntimeError("quota spent")

    got: list[int] = []

    async def consume() -> None:
        async for p in prefetch(pages()):
            got.append(p)

    with pytest.raises(RuntimeError, match="quota spent"):
        await consume()
    assert got == [1, 2]


async def test_prefetch_runs_ahead_while_the_consumer_waits_and_stops_when_it_leaves() -> None:
    produced: list[int] = []
    closed = asyncio.Event()

    async def pages() -> AsyncIterator[int]:
        try:
            for i in range(100):
                produced.append(i)
                yield i
        finally:
            closed.set()

    ahead = prefetch(pages(), depth=2)
    assert await anext(ahead) == 0
    for _ in range(10):  # the consumer waits on something else; the producer runs
        await asyncio.sleep(0)
    assert produced[:3] == [0, 1, 2]  # ahead by the depth, no further
    assert len(produced) <= 4
    await ahead.aclose()
    assert closed.is_set()  # leaving early closed the source


async def test_gather_or_cancel_cancels_the_others_when_one_fails() -> None:
    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def failing() -> int:
        raise ValueError("store went away")

    with pytest.raises(ValueError, match="went away"):
        await gather_or_cancel(slow(), failing())
    assert cancelled.is_set()


async def test_in_flight_runs_one_piece_at_a_time_in_order_and_raises_its_error() -> None:
    done: list[int] = []
    release = asyncio.Event()

    async def piece(n: int) -> None:
        await release.wait()
        done.append(n)

    inflight = InFlight()
    inflight.start(piece(1))
    with pytest.raises(RuntimeError, match="has not landed"):
        inflight.start(piece(2))
    release.set()
    await inflight.landed()
    inflight.start(piece(2))
    await inflight.landed()
    assert done == [1, 2]

    async def fails() -> None:
        raise ValueError("the log refused the batch")

    inflight.start(fails())
    with pytest.raises(ValueError, match="refused"):
        await inflight.landed()
    await inflight.landed()  # nothing in flight any more


async def test_in_flight_abandon_cancels_the_piece_and_waits_for_it() -> None:
    cleaned = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    inflight = InFlight()
    inflight.start(slow())
    await asyncio.sleep(0)  # let it start
    await inflight.abandon()
    assert cleaned.is_set()
