"""asyncio helpers shared by the engine and the adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any, Final, TypeVar, cast

__all__ = ["InFlight", "gather_or_cancel", "prefetch"]

_T = TypeVar("_T")


async def gather_or_cancel(*work: Coroutine[Any, Any, _T]) -> list[_T]:
    """Run ``work`` concurrently and return the results in order; if one fails (or this is
    cancelled), cancel the rest and wait for them to end before raising, so that nothing they
    started runs on after the failure."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class InFlight:
    """At most one piece of work running in a task of its own while the caller prepares the
    next (a batch appended or sent while the next is diffed or decided): started, then waited
    for before the next is started, so the pieces run in order."""

    def __init__(self) -> None:
        self._task: asyncio.Future[None] | None = None

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        if self._task is not None:
            work.close()  # never started: not left to warn that it was never awaited
            raise RuntimeError("InFlight.start: the previous piece has not landed")
        self._task = asyncio.ensure_future(work)

    async def landed(self) -> None:
        """Wait for the piece in flight; its error, if any, is raised here."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """Cancel the piece in flight and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


_DONE: Final = object()


async def prefetch(source: AsyncIterator[_T], depth: int = 2) -> AsyncGenerator[_T, None]:
    """Iterate ``source`` in a task of its own, up to ``depth`` items ahead of the consumer, so
    that producing the next item (a page decoded and normalised) runs while the consumer waits
    on something else (its database). Errors reach the consumer in order, after the items
    produced before them; leaving early cancels the producer."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except asyncio.CancelledError:
            raise  # the consumer left: nobody is waiting for the rest
        except Exception as exc:  # handed over in order, after the items before it
            await queue.put(_Failure(exc))
            return
        await queue.put(_DONE)

    task = asyncio.ensure_future(produce())
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield cast(_T, item)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
