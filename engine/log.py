"""The event log: one SQLite file, append-only, idempotent, hash-chained, one writer.

Appends are atomic per batch, positions are gapless and in commit order, and each stream has a
version guarded by ``UNIQUE(stream, version)``. Appending an event whose id is already stored is
a no-op, so observing the same page twice appends nothing. Triggers refuse UPDATE and DELETE on
the events table; each row's hash chains to the previous one (engine.logverify walks it).
Consumers (projections, checkpoints of fetchers) write their own tables and their checkpoint in
the same transaction through ``transaction()``.

sqlite3 errors never leave this module: they become LogCorruptError (the file is damaged or not
a log), RetriableError (the database was busy) or FatalError (anything else, e.g. a full disk).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal
from uuid import uuid4

import aiosqlite

from engine._logread import LogReads, lookups
from engine._logschema import FORMAT, GENESIS, ROW_COLUMNS, SCHEMA, row_hash
from engine._logtypes import (
    AppendResult,
    Head,
    NewEvent,
    Recorded,
    format_ts,
    parse_ts,
)
from engine._pending import Pending
from engine._walcopy import WalCopier
from engine._writelock import WriterLock, prepare_log_file
from engine.codec import encode_event
from engine.errors import (
    CcsyncError,
    ConcurrencyError,
    FatalError,
    LogCorruptError,
    RetriableError,
)
from engine.events import stream_of
from engine.ports import Clock, utc_now

__all__ = [
    "AppendResult",
    "EventLog",
    "Head",
    "NewEvent",
    "Recorded",
    "Transaction",
    "format_ts",
    "parse_ts",
]

Durability = Literal["normal", "full"]
Consumer = Callable[[Pending, Sequence[Recorded]], Awaitable[None]]
_INSERT: Final = f"INSERT INTO events ({ROW_COLUMNS}, hash) VALUES (?,?,?,?,?,?,?,?,?)"
# The writer's own automatic checkpoint, a safety net: engine._walcopy checkpoints in the
# background long before the WAL reaches this (~200 MB).
WAL_CHECKPOINT_PAGES: Final = 50_000
WRITER_CACHE_KIB: Final = 32 * 1024
STATEMENTS: Final = 24
_STORED_IDS: Final = "SELECT event_id FROM events WHERE event_id IN ({})"
_STREAM_HEADS: Final = (
    "SELECT stream, MAX(version) FROM events WHERE stream IN ({}) GROUP BY stream"
)


def _db_error(path: Path, action: str, exc: sqlite3.Error) -> CcsyncError:
    """Translate a sqlite3 error at the boundary into the engine's error tree."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return RetriableError(f"event log {path}: {action}: the database is busy ({text})")
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "no such table" in text
    ):
        return LogCorruptError(f"event log {path}: {action}: {text}")
    return FatalError(f"event log {path}: {action} failed: {text}")


class Transaction:
    """A consumer's write transaction on the log file: its own tables plus its checkpoint.

    Its writes through ``conn`` are queued and sent together (engine._pending); reads through
    ``conn`` see them."""

    def __init__(self, conn: Pending, head_position: int, clock: Clock) -> None:
        self.conn = conn
        self.head_position = head_position
        self.clock = clock  # the log's

    async def set_checkpoint(self, name: str, value: str, position: int | None = None) -> None:
        """Write checkpoint ``name`` (default position: the log head when the tx began)."""
        await _write_checkpoints(
            self.conn,
            {name: value},
            self.head_position if position is None else position,
            self.clock(),
        )


async def _write_checkpoints(
    conn: Pending, values: Mapping[str, str], position: int, at: datetime
) -> None:
    """Write ``values`` as checkpoints reached at ``position``, updated at ``at`` (the log's
    clock: the time its events are recorded at)."""
    now = format_ts(at)
    await conn.executemany(
        "INSERT INTO checkpoints (name, value, position, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
        "position = excluded.position, updated_at = excluded.updated_at",
        [(k, v, position, now) for k, v in values.items()],
    )


class EventLog(LogReads):
    """The SQLite event log. Open with ``await EventLog.open(path)``; close when done.

    One EventLog is meant for one event loop. Its reads never see another task's uncommitted
    append: on a writer they wait for the write in flight (inside ``transaction()`` they see
    the consumer's own writes).
    """

    def __init__(
        self,
        path: Path,
        conn: aiosqlite.Connection,
        lock: WriterLock | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.path = path
        self._conn = conn
        self._lock = lock
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None  # the task inside a write transaction
        self._tx: Pending | None = None  # that transaction's writes
        self._log_id = ""
        self._head: tuple[int, bytes, str | None] = (0, GENESIS, None)
        self._consumers: list[Consumer] = []
        self._committed: aiosqlite.Connection | None = None  # see committed()
        self._committed_opening = asyncio.Lock()  # (two observations ask for it at once)
        self._wal: WalCopier | None = None  # writers: checkpoints in the background

    # --- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        writer: bool = True,
        durability: Durability = "normal",
        clock: Callable[[], datetime] | None = None,
    ) -> EventLog:
        """Open (creating with mode 0600 if absent) the log at ``path``.

        ``writer=True`` takes the single-writer lock and fails with LogLockedError naming the
        holder if another process has it. Readers need no lock (WAL lets them run beside it).
        ``durability="full"`` also survives power loss (fsync per commit); "normal" survives
        any crash of the process.
        """
        p = Path(path)
        lock = prepare_log_file(p, writer)
        try:
            # A small statement cache: the lookups by id lists compile one statement per list
            # length, and at the default of 128 cached statements (several hundred KB each
            # with 900 parameters) they held more memory than the page cache.
            conn = await aiosqlite.connect(p, isolation_level=None, cached_statements=STATEMENTS)
        except sqlite3.Error as exc:
            if lock:
                lock.release()
            raise _db_error(p, "open", exc) from exc
        log = cls(p, conn, lock, clock or utc_now)
        try:
            await log._init(writer, durability)
        except sqlite3.Error as exc:
            await log.close()
            raise _db_error(p, "open", exc) from exc
        except BaseException:
            await log.close()
            raise
        return log

    async def _init(self, writer: bool, durability: Durability) -> None:
        c = self._conn
        await c.execute("PRAGMA busy_timeout = 5000")
        if writer:
            await c.execute("PRAGMA journal_mode = WAL")
            await c.execute(f"PRAGMA synchronous = {durability.upper()}")
            await c.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._wal = WalCopier(self.path)
            await self._wal.start()
            # The ids and stream names the unique indexes hold are random, so every batch touches
            # index pages all over the file: a page cache keeps them in memory (bounded, unlike
            # the log) instead of re-reading them from the OS on each append. 32 MB, not 64: a
            # sqlite3 writer of the benchmark's million rows peaked at 106 MB RSS with 64 (the
            # target is 100) and was no faster than with 32 (docs/BENCHMARKS.md).
            await c.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            await c.executescript(SCHEMA)
            await c.execute(
                "INSERT OR IGNORE INTO log_meta (key, value) VALUES ('log_id', ?), ('format', ?)",
                (str(uuid4()), FORMAT),
            )
        try:
            rows = await c.execute_fetchall("SELECT key, value FROM log_meta")
            meta = {str(r[0]): str(r[1]) for r in rows}
        except sqlite3.Error as exc:
            raise LogCorruptError(f"{self.path} is not a ccsync event log: {exc}") from exc
        if meta.get("format", FORMAT) != FORMAT:
            raise FatalError(
                f"{self.path} has log format {meta['format']}; this build reads format {FORMAT}"
            )
        self._log_id = str(meta.get("log_id", ""))
        await self._load_head()

    async def _load_head(self) -> None:
        rows = list(
            await self._conn.execute_fetchall(
                "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1"
            )
        )
        self._head = (rows[0][0], rows[0][1], rows[0][2]) if rows else (0, GENESIS, None)

    async def close(self) -> None:
        """Close the connection and release the writer lock (safe to call twice)."""
        try:
            if self._wal is not None:
                wal, self._wal = self._wal, None
                await wal.close()
            if self._committed is not None:
                reader, self._committed = self._committed, None
                await reader.close()
            await self._conn.close()
        finally:
            if self._lock:
                self._lock.release()

    async def __aenter__(self) -> EventLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- appending -----------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected: Mapping[str, int] | None = None,
        checkpoints: Mapping[str, str] | None = None,
        within: Callable[[Pending], Awaitable[None]] | None = None,
    ) -> AppendResult:
        """Append a batch atomically; events whose id is already stored are skipped.

        ``expected`` maps a stream to the version the caller last saw (0: no such stream); a
        mismatch raises ConcurrencyError and appends nothing. A batch whose events are all
        already stored is a no-op and is not checked against ``expected``, so retrying a batch
        that did commit is harmless. ``checkpoints`` are written in the same transaction, so
        a fetcher's checkpoint never runs ahead of the events it covers. ``within`` runs in the
        same transaction too, for a consumer's own bookkeeping that must commit with the batch.
        """
        async with self._writing("append") as tx:
            result, head = await self._append_in_tx(tx, events, expected or {})
            if checkpoints:
                await _write_checkpoints(tx, checkpoints, head[0], self._clock())
            if within is not None:
                await within(tx)
            if result.new:
                for consumer in self._consumers:
                    await consumer(tx, result.new)
        self._head = head
        return result

    def add_consumer(self, consumer: Consumer) -> None:
        """Call ``consumer(tx, appended)`` inside every append's transaction, after the rows
        are queued, with the events that were new. What it writes through ``conn`` commits
        with them; if it raises, the append is rolled back. (A projection folded this way is
        never behind the log and costs no transaction of its own.)"""
        self._consumers.append(consumer)

    @asynccontextmanager
    async def _writing(self, action: str) -> AsyncIterator[Pending]:
        """Hold the write lock for one BEGIN IMMEDIATE ... COMMIT, rolling back on any error.

        The transaction's writes are queued (engine._pending) and sent with the COMMIT, in one
        job: the database thread writes the whole batch while the loop does other work."""
        if self._lock is None:
            raise FatalError(f"{action}: this log was opened read-only")
        me = asyncio.current_task()
        if me is not None and self._owner is me:
            raise FatalError(f"{action} inside transaction() would wait for itself forever")
        async with self._write_lock:
            self._owner = me
            try:
                try:
                    await self._conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise _db_error(self.path, action, exc) from exc
                except BaseException:
                    # Cancelled while waiting: the worker thread may still run the BEGIN, which
                    # would leave the connection inside a transaction nobody owns.
                    await self._rollback()
                    raise
                tx = self._tx = Pending(self._conn)
                try:
                    yield tx
                    await tx.flush("COMMIT")
                except sqlite3.IntegrityError as exc:
                    await self._rollback(tx)
                    # (The queued writes fail at the COMMIT, so this may be a projection's row
                    # as well as an event; an event is refused only if someone wrote to the
                    # log without its lock.)
                    raise FatalError(
                        f"event log {self.path}: {action} refused by the database ({exc}); "
                        "nothing was written. If it names the events table, another program "
                        "is writing to the log without its lock"
                    ) from exc
                except sqlite3.Error as exc:
                    await self._rollback(tx)
                    raise _db_error(self.path, action, exc) from exc
                except BaseException:
                    await self._rollback(tx)
                    raise
                tx.committed()
                if self._wal is not None:
                    self._wal.committed(self._conn.total_changes)
            finally:
                self._owner = None
                self._tx = None

    async def _rollback(self, tx: Pending | None = None) -> None:
        if tx is not None:
            tx.discard()
        try:
            await self._conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction: a cancelled COMMIT went through after all
        finally:
            await self._load_head()  # the truth, whether or not the last COMMIT happened

    async def _append_in_tx(
        self, c: Pending, events: Sequence[NewEvent], expected: Mapping[str, int]
    ) -> tuple[AppendResult, tuple[int, bytes, str | None]]:
        ids = list(dict.fromkeys(e.id for e in events))
        streams = {e.id: stream_of(e.event) for e in events}
        # Which ids are stored, and the version of every stream the batch may touch (a
        # superset of what the new events need), in one job: each read awaited on its own
        # waited for the loop, busy with the next batch, between every two.
        id_reads = lookups(_STORED_IDS, ids)
        head_reads = lookups(_STREAM_HEADS, list({*streams.values(), *expected}))
        found = await c.fetch_each([*id_reads, *head_reads])
        seen: set[str] = {r[0] for rows in found[: len(id_reads)] for r in rows}
        versions: dict[str, int] = {r[0]: r[1] for rows in found[len(id_reads) :] for r in rows}
        duplicates = tuple(i for i in ids if i in seen)
        fresh: list[tuple[NewEvent, str]] = []
        for e in events:
            if e.id not in seen:
                seen.add(e.id)  # a repeat inside the batch is appended once
                fresh.append((e, streams[e.id]))
        if not fresh:
            return AppendResult((), duplicates), self._head

        for stream, want in expected.items():
            have = versions.get(stream, 0)
            if have != want:
                raise ConcurrencyError(stream, want, have)

        pos, prev, head_ts = self._head
        ts = format_ts(self._clock())
        if head_ts is not None and ts < head_ts:
            ts = head_ts  # a clock stepping back must not break recorded_at's order
        now = parse_ts(ts)
        rows = []
        recorded = []
        for e, stream in fresh:
            pos += 1
            version = versions.get(stream, 0) + 1
            versions[stream] = version
            ev = e.event
            tag: str = ev.__struct_config__.tag  # type: ignore[assignment]
            sv = ev.schema_version
            payload = encode_event(ev)
            prev = row_hash(prev, pos, e.id, stream, version, tag, sv, ts, payload)
            rows.append((pos, e.id, stream, version, tag, sv, ts, payload, prev))
            recorded.append(Recorded(pos, e.id, stream, version, now, ev))
        # (An executemany, not engine._pending's bulk form: appending alone, as the log's own
        # benchmark does, it was 30% faster; beside a busy loop the projections' rows, which
        # do go in bulk, are what waited for the GIL.)
        await c.executemany(_INSERT, rows)
        return AppendResult(tuple(recorded), duplicates), (pos, prev, ts)

    # --- consumers -----------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction for a consumer's tables and checkpoint, serialised with appends.

        Everything written through ``tx.conn`` commits together or not at all. Do not call
        ``append`` inside it (that raises FatalError): use ``append(checkpoints=...)``.
        """
        async with self._writing("transaction") as tx:
            yield Transaction(tx, self._head[0], self._clock)

    @property
    def connection(self) -> aiosqlite.Connection:
        """The underlying connection, for consumers' reads of their own tables.

        On a writer it is shared with appends: a query through it outside ``transaction()``
        can see another task's write in flight. Read inside ``transaction()``, or use the
        log's own read methods, which wait for it.
        """
        return self._conn

    async def committed(self) -> aiosqlite.Connection:
        """A connection of its own (opened on first use) that reads what is committed.

        Its reads never queue behind a transaction in flight on the writer's connection, so a
        task can read while another's batch is written: the next batch's diff reads the
        projection while this one commits. They do not see that batch (use it for rows the
        batch in flight does not touch). On a reader log it is the log's own connection.
        """
        if self._lock is None:
            return self._conn
        async with self._committed_opening:
            if self._committed is None:
                try:
                    conn = await aiosqlite.connect(
                        f"file:{self.path}?mode=ro", uri=True, cached_statements=STATEMENTS
                    )
                except sqlite3.Error as exc:
                    raise _db_error(self.path, "open a reader", exc) from exc
                self._committed = conn
                await conn.execute("PRAGMA busy_timeout = 5000")
        return self._committed

    async def checkpoint(self, name: str) -> str | None:
        """The value of checkpoint ``name``, or None if it was never written."""
        rows = await self._fetch("SELECT value FROM checkpoints WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def checkpoints(self) -> dict[str, tuple[str, int, str]]:
        """Every checkpoint: name -> (value, log position it was written at, updated_at)."""
        rows = await self._fetch(
            "SELECT name, value, position, updated_at FROM checkpoints ORDER BY name", ()
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    # --- reading (the queries themselves are in engine._logread) --------------------------

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        """One query, never seeing another task's uncommitted writes on this connection."""
        try:
            if self._tx is not None and self._owner is asyncio.current_task():
                return await self._tx.execute_fetchall(sql, params)  # (sees its own writes)
            if self._lock is None:
                return list(await self._conn.execute_fetchall(sql, params))
            async with self._write_lock:
                return list(await self._conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _db_error(self.path, "read", exc) from exc

    def copy_wal_soon(self) -> None:
        """Start copying the write-ahead log into the database file and return at once: the
        copy runs on a connection and thread of its own (a passive checkpoint, which blocks no
        writer and no reader); ``close`` waits for it."""
        if self._wal is not None:
            self._wal.copy_soon()

    async def flush_wal(self) -> None:
        """Copy the write-ahead log into the database file now and wait for it (a passive
        checkpoint: it waits for no reader and no writer). A cycle only starts the copy
        (``copy_wal_soon``); this is for callers that need it done before they go on."""
        if self._wal is not None:
            await self._wal.copy()

    async def head(self) -> Head:
        """The newest committed row (a reader asks the file; a writer knows it)."""
        if self._lock is None:
            try:
                await self._load_head()
            except sqlite3.Error as exc:
                raise _db_error(self.path, "read", exc) from exc
        pos, h, ts = self._head
        return Head(self._log_id, pos, h.hex(), ts)
