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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from uuid import uuid4

import aiosqlite

from engine._logread import LogReads
from engine._logschema import FORMAT, GENESIS, ROW_COLUMNS, SCHEMA, row_hash
from engine._logtypes import (
    AppendResult,
    Head,
    NewEvent,
    Recorded,
    format_ts,
    parse_ts,
)
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
_T = TypeVar("_T")
Consumer = Callable[[aiosqlite.Connection, Sequence[Recorded]], Awaitable[None]]
_INSERT: Final = f"INSERT INTO events ({ROW_COLUMNS}, hash) VALUES (?,?,?,?,?,?,?,?,?)"
WAL_CHECKPOINT_PAGES: Final = 10_000
WRITER_CACHE_KIB: Final = 32 * 1024
STATEMENTS: Final = 24
_MAX_VARS: Final = 900  # under SQLite's oldest host-parameter limit (999)


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
    """A consumer's write transaction on the log file: its own tables plus its checkpoint."""

    def __init__(self, conn: aiosqlite.Connection, head_position: int) -> None:
        self.conn = conn
        self.head_position = head_position

    async def set_checkpoint(self, name: str, value: str, position: int | None = None) -> None:
        """Write checkpoint ``name`` (default position: the log head when the tx began)."""
        await _write_checkpoints(
            self.conn, {name: value}, self.head_position if position is None else position
        )


async def _write_checkpoints(
    conn: aiosqlite.Connection, values: Mapping[str, str], position: int
) -> None:
    now = format_ts(datetime.now(UTC))
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
        self._log_id = ""
        self._head: tuple[int, bytes, str | None] = (0, GENESIS, None)
        self._consumers: list[Consumer] = []

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
        log = cls(p, conn, lock, clock or (lambda: datetime.now(UTC)))
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
            # Checkpoint the WAL every ~40 MB rather than SQLite's 4 MB: each checkpoint is an
            # fsync and a rewrite of the same hot index pages, and at the default they halved
            # append throughput. Commits stay as durable as `durability` says.
            await c.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
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
        within: Callable[[aiosqlite.Connection], Awaitable[None]] | None = None,
    ) -> AppendResult:
        """Append a batch atomically; events whose id is already stored are skipped.

        ``expected`` maps a stream to the version the caller last saw (0: no such stream); a
        mismatch raises ConcurrencyError and appends nothing. A batch whose events are all
        already stored is a no-op and is not checked against ``expected``, so retrying a batch
        that did commit is harmless. ``checkpoints`` are written in the same transaction, so
        a fetcher's checkpoint never runs ahead of the events it covers. ``within`` runs in the
        same transaction too, for a consumer's own bookkeeping that must commit with the batch.
        """
        async with self._writing("append"):
            result, head = await self._append_in_tx(events, expected or {})
            if checkpoints:
                await _write_checkpoints(self._conn, checkpoints, head[0])
            if within is not None:
                await within(self._conn)
            if result.new:
                for consumer in self._consumers:
                    await consumer(self._conn, result.new)
        self._head = head
        return result

    def add_consumer(self, consumer: Consumer) -> None:
        """Call ``consumer(conn, appended)`` inside every append's transaction, after the rows
        are written, with the events that were new. What it writes through ``conn`` commits
        with them; if it raises, the append is rolled back. (A projection folded this way is
        never behind the log and costs no transaction of its own.)"""
        self._consumers.append(consumer)

    @asynccontextmanager
    async def _writing(self, action: str) -> AsyncIterator[None]:
        """Hold the write lock for one BEGIN IMMEDIATE ... COMMIT, rolling back on any error."""
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
                try:
                    yield
                    await self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    await self._rollback()
                    raise _db_error(self.path, action, exc) from exc
                except BaseException:
                    await self._rollback()
                    raise
            finally:
                self._owner = None

    async def _rollback(self) -> None:
        try:
            await self._conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction: a cancelled COMMIT went through after all
        finally:
            await self._load_head()  # the truth, whether or not the last COMMIT happened

    async def _append_in_tx(
        self, events: Sequence[NewEvent], expected: Mapping[str, int]
    ) -> tuple[AppendResult, tuple[int, bytes, str | None]]:
        c = self._conn
        ids = list(dict.fromkeys(e.id for e in events))
        seen: set[str] = set()
        for chunk in _chunks(ids, _MAX_VARS):
            q = f"SELECT event_id FROM events WHERE event_id IN ({_marks(len(chunk))})"
            seen.update(r[0] for r in await c.execute_fetchall(q, chunk))
        duplicates = tuple(i for i in ids if i in seen)
        fresh: list[tuple[NewEvent, str]] = []
        for e in events:
            if e.id not in seen:
                seen.add(e.id)  # a repeat inside the batch is appended once
                fresh.append((e, stream_of(e.event)))
        if not fresh:
            return AppendResult((), duplicates), self._head

        streams = list({s for _, s in fresh} | set(expected))
        versions: dict[str, int] = {}
        for chunk in _chunks(streams, _MAX_VARS):
            q = (
                "SELECT stream, MAX(version) FROM events "
                f"WHERE stream IN ({_marks(len(chunk))}) GROUP BY stream"
            )
            versions.update(await c.execute_fetchall(q, chunk))  # type: ignore[arg-type]
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
        try:
            await c.executemany(_INSERT, rows)
        except sqlite3.IntegrityError as exc:
            # Unreachable with the writer lock held: someone wrote without it.
            raise FatalError(
                f"event log {self.path}: append refused by the database ({exc}); "
                "is another program writing to the log without its lock?"
            ) from exc
        return AppendResult(tuple(recorded), duplicates), (pos, prev, ts)

    # --- consumers -----------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction for a consumer's tables and checkpoint, serialised with appends.

        Everything written through ``tx.conn`` commits together or not at all. Do not call
        ``append`` inside it (that raises FatalError): use ``append(checkpoints=...)``.
        """
        async with self._writing("transaction"):
            yield Transaction(self._conn, self._head[0])

    @property
    def connection(self) -> aiosqlite.Connection:
        """The underlying connection, for consumers' reads of their own tables.

        On a writer it is shared with appends: a query through it outside ``transaction()``
        can see another task's write in flight. Read inside ``transaction()``, or use the
        log's own read methods, which wait for it.
        """
        return self._conn

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
            if self._lock is None or self._owner is asyncio.current_task():
                return list(await self._conn.execute_fetchall(sql, params))
            async with self._write_lock:
                return list(await self._conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _db_error(self.path, "read", exc) from exc

    async def flush_wal(self) -> None:
        """Copy the write-ahead log into the database file now (a passive checkpoint: it waits
        for no reader). Called after a cycle, so the cycle that wrote the pages pays for them
        instead of whichever later commit crosses SQLite's automatic threshold."""
        if self._lock is None:
            return
        async with self._write_lock:
            try:
                await self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                raise _db_error(self.path, "checkpoint", exc) from exc

    async def head(self) -> Head:
        """The newest committed row (a reader asks the file; a writer knows it)."""
        if self._lock is None:
            try:
                await self._load_head()
            except sqlite3.Error as exc:
                raise _db_error(self.path, "read", exc) from exc
        pos, h, ts = self._head
        return Head(self._log_id, pos, h.hex(), ts)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: list[_T], size: int) -> list[list[_T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
