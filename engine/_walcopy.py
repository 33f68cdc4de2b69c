"""Copying the write-ahead log into the database file from a thread of its own.

In WAL mode every commit appends its pages to the ``-wal`` file; a checkpoint copies them into
the database file (reading the WAL back, writing the file, two fsyncs). Left to SQLite, the
commit that crosses ``wal_autocheckpoint`` runs the checkpoint itself, in the writer's thread,
and every append waits behind it. Here a connection of its own runs PASSIVE checkpoints in its
own thread once enough has been committed, each in a task that ends with it: the writer goes
on appending to the WAL meanwhile (a PASSIVE checkpoint never blocks it), so the copying runs
on the other core. The writer keeps a high ``wal_autocheckpoint`` only as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Final

import aiosqlite
import structlog

__all__ = ["WalCopier"]

_log: Final = structlog.get_logger("ccsync.log")
# Rows committed between two background checkpoints (about one observed batch of 5,000
# contacts with its projection rows): fewer, larger checkpoints, each a pair of fsyncs.
COPY_AFTER_ROWS: Final = 20_000


class WalCopier:
    """Background PASSIVE checkpoints of the log at ``path``: ``committed(total_changes)``
    after each commit, ``copy()`` to checkpoint now and wait for it. At most one runs at a
    time, as a task of its own that ends with it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None  # the checkpoint in progress
        self._copied_at = 0  # the writer's total_changes when the last copy was asked for

    async def start(self) -> None:
        self._conn = await aiosqlite.connect(self._path, isolation_level=None)
        await self._conn.execute("PRAGMA busy_timeout = 5000")

    def committed(self, total_changes: int) -> None:
        """The writer committed; its connection's total_changes is now ``total_changes``.
        Starts a checkpoint when enough was written since the last, unless one is running
        (the next commit asks again)."""
        if self._conn is None or total_changes - self._copied_at < COPY_AFTER_ROWS:
            return
        if self._task is None or self._task.done():
            self._copied_at = total_changes
            self._task = asyncio.create_task(self._checkpoint(), name="ccsync-wal-copy")

    async def copy(self) -> None:
        """Checkpoint now (after the one in progress, if any) and wait for it."""
        await self.settled()
        if self._conn is not None:
            await self._checkpoint()

    def copy_soon(self) -> None:
        """Checkpoint after the one in progress (if any), and return at once: ``settled`` and
        ``close`` wait for it."""
        if self._conn is not None:
            self._task = asyncio.create_task(self._after(self._task), name="ccsync-wal-copy")

    async def _after(self, running: asyncio.Task[None] | None) -> None:
        if running is not None:
            await asyncio.wait([running])  # (its outcome is its own: only the order matters)
        await self._checkpoint()

    async def settled(self) -> None:
        """Wait for the checkpoint in progress, if any."""
        if self._task is not None:
            task, self._task = self._task, None
            await task  # (_checkpoint raises nothing but cancellation)

    async def _checkpoint(self) -> None:
        assert self._conn is not None
        try:
            await self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            # Nothing is lost: the pages stay in the WAL, and the writer's own automatic
            # checkpoint copies them if this keeps failing.
            _log.warning("log.wal_copy_failed", path=str(self._path), error=str(exc))

    async def close(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.settled()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
