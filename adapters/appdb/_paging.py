"""Paging helpers for observation: one query read ahead, and a Page from rows."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Sequence
from typing import Final

import msgspec

from adapters.appdb._driver import Row
from engine.model import ContactRecord
from engine.ports import Page, Rejected

__all__ = ["ReadAhead", "make_page"]

_enc: Final = msgspec.json.Encoder(enc_hook=str)


class ReadAhead:
    """One query in flight while the caller works on the previous page's rows.

    The database (SQLite's thread, PostgreSQL's server) reads page k+1 while we convert page
    k and the engine stores it; leaving early cancels the read.
    """

    def __init__(self, first: Awaitable[list[Row]]) -> None:
        self._task: asyncio.Future[list[Row]] | None = asyncio.ensure_future(first)

    async def start(self, query: Awaitable[list[Row]]) -> None:
        """Send the next query. One turn of the loop lets it reach the database (asyncpg
        writes it to the socket, aiosqlite hands it to its thread) before the caller goes on
        converting rows: without it the query waited, unsent, until the caller next awaited."""
        self._task = asyncio.ensure_future(query)
        await asyncio.sleep(0)

    async def take(self) -> list[Row]:
        assert self._task is not None
        task, self._task = self._task, None
        return await task

    async def __aenter__(self) -> ReadAhead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def make_page(
    request: str,
    records: Sequence[ContactRecord],
    rejected: Sequence[Rejected],
    rows: Sequence[Row],
    resume: str,
    *,
    full_scan: bool,
) -> Page:
    digest = hashlib.sha256(_enc.encode(rows)).hexdigest()
    return Page(
        request=request,
        contacts=tuple(records),
        rejected=tuple(rejected),
        content_hash=digest,
        resume=resume,
        full_scan=full_scan,
    )
