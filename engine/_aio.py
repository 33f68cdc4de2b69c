"""asyncio helpers shared by the engine and the adapters."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["gather_or_cancel"]

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
