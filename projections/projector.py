"""Keeping the live projections current, and rebuilding them elsewhere for replay and audit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiosqlite
import structlog

from engine._gc import collector_relaxed
from engine._pending import Pending
from engine.errors import FatalError
from engine.log import EventLog, Recorded
from engine.progress import Progress
from projections.runner import apply_batch, ensure_schema, projected_position
from projections.schema import TABLES

__all__ = ["Projector", "compare_projections", "rebuild"]

_BATCH: Final = 5000
_log: Final = structlog.get_logger("ccsync.projections")


class Projector:
    """Folds new log events into the projection tables that live in the log's own file.

    Once started it folds every append inside the append's own transaction (the projections
    and their checkpoint commit with the events, so they are never behind the log); catch_up
    folds whatever came before, or was appended by another EventLog on the same file.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._lock = asyncio.Lock()
        self._inline = False
        # The checkpoint as this projector last committed it (None: read it from the file).
        # Only this projector writes it, so an append need not read it back, which would send
        # the append's queued rows ahead of the fold (engine._pending).
        self._folded: int | None = None

    async def start(self) -> None:
        self._folded = None
        async with self.log.transaction() as tx:
            dropped = await ensure_schema(tx.conn)
        if dropped:
            _log.warning("projections.rebuilding", reason="their layout changed in this build")
        await self.catch_up()
        if not self._inline:
            self.log.add_consumer(self._fold_appended)
            self._inline = True

    async def position(self) -> int:
        return await projected_position(self.log.connection)

    async def _fold_appended(self, tx: Pending, appended: Sequence[Recorded]) -> None:
        # Inside the append's transaction. Behind (the appended events do not follow the
        # checkpoint): leave them to catch_up, which reads the log in order.
        folded = self._folded if self._folded is not None else await projected_position(tx)
        if appended[0].position == folded + 1:
            await self._apply(tx, appended)

    async def _apply(self, tx: Pending, batch: Sequence[Recorded]) -> None:
        self._folded = None  # until the transaction has committed
        await apply_batch(tx, batch)
        last = batch[-1].position

        def committed() -> None:
            self._folded = last

        tx.on_commit(committed)

    async def catch_up(self) -> int:
        """Project every event after the checkpoint; returns the new projected position.

        Once started, appends are folded in their own transaction and there is usually nothing
        left to do here: it is the safety net after an append made before ``start``.
        """
        async with self._lock:
            pos = await self.position()
            if pos >= (await self.log.head()).position:
                return pos  # the usual case: every append was folded as it was written
            while True:
                async with self.log.transaction() as tx:
                    # Read the checkpoint inside the transaction: an append folded meanwhile
                    # has moved it, and nothing may be folded twice.
                    pos = await projected_position(tx.conn)
                    batch = [r async for r in self.log.read(pos + 1, pos + 1 + _BATCH)]
                    if not batch:
                        return pos
                    await self._apply(tx.conn, batch)


async def rebuild(
    log: EventLog, out: Path, stop: int | None = None, progress: Progress | None = None
) -> int:
    """Fold the log from position 1 up to (not including) ``stop`` into a new file ``out``.

    Returns the last position folded. ``out`` must not exist: a rebuild never overwrites.
    """
    try:
        os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise FatalError(f"{out} exists; a replay writes a new file only") from None
    with collector_relaxed():
        return await _rebuild(log, out, stop, progress)


async def _rebuild(log: EventLog, out: Path, stop: int | None, progress: Progress | None) -> int:
    last = 0
    async with aiosqlite.connect(out, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = OFF")  # a rebuild is redone, not recovered
        await conn.execute("PRAGMA cache_size = -65536")  # random-key index inserts need it
        schema = Pending(conn)
        await ensure_schema(schema)
        await schema.flush()
        batch: list[Recorded] = []
        async for r in log.read(1, stop):
            batch.append(r)
            if len(batch) >= _BATCH:
                last = await _commit(conn, batch)
                if progress is not None:
                    progress.update("events replayed", len(batch))
                batch = []
        if batch:
            last = await _commit(conn, batch)
        await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if progress is not None:
        progress.update("events replayed", len(batch))
        progress.done()
    return last


async def _commit(conn: aiosqlite.Connection, batch: list[Recorded]) -> int:
    await conn.execute("BEGIN")
    tx = Pending(conn)
    await apply_batch(tx, batch)
    await tx.flush("COMMIT")
    return batch[-1].position


async def compare_projections(live: Path, rebuilt: Path) -> dict[str, int]:
    """Rows that differ between two projection files, by table (empty dict: identical)."""
    diffs: dict[str, int] = {}
    async with aiosqlite.connect(f"file:{live}?mode=ro", uri=True) as conn:
        await conn.execute("ATTACH DATABASE ? AS r", (f"file:{rebuilt}?mode=ro",))
        for table in TABLES:
            n = 0
            for a, b in (("main", "r"), ("r", "main")):
                rows = await conn.execute_fetchall(
                    f"SELECT COUNT(*) FROM (SELECT * FROM {a}.{table} "
                    f"EXCEPT SELECT * FROM {b}.{table})"
                )
                n += next(iter(rows))[0]
            if n:
                diffs[table] = n
    return diffs
