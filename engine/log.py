"""The event log: one SQLite file, append-only, idempotent, hash-chained, one writer.

Appends are atomic per batch, positions are gapless and in commit order, and each stream has a
version guarded by ``UNIQUE(stream, version)``. Appending an event whose id is already stored is
a no-op, so observing the same page twice appends nothing. Triggers refuse UPDATE and DELETE on
the events table; each row's hash chains to the previous one (engine.logverify walks it).
Consumers (projections, checkpoints of fetchers) write their own tables and their checkpoint in
the same transaction through ``transaction()``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, TypeVar
from uuid import uuid4

import aiosqlite
import msgspec

from engine._logschema import GENESIS, SCHEMA, row_hash
from engine._writelock import WriterLock
from engine.codec import decode_event, encode_event
from engine.errors import ConcurrencyError, FatalError, LogCorruptError
from engine.events import EventBase, stream_of

__all__ = ["AppendResult", "EventLog", "Head", "NewEvent", "Recorded", "Transaction"]

Durability = Literal["normal", "full"]
_T = TypeVar("_T")
_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_ROW_COLUMNS: Final = (
    "position, event_id, stream, version, type, schema_version, recorded_at, payload"
)


def format_ts(ts: datetime) -> str:
    """The log's fixed-width, sortable UTC timestamp text."""
    return ts.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append with the deterministic id its producer gave it."""

    id: str
    event: EventBase


class Recorded(msgspec.Struct, frozen=True):
    """An event as stored: the envelope the log assigned, and the event itself."""

    position: int
    id: str
    stream: str
    version: int
    recorded_at: datetime
    event: EventBase


class Head(msgspec.Struct, frozen=True):
    """The newest row: what an operator anchors to detect truncation."""

    log_id: str
    position: int
    hash: str
    recorded_at: str | None


class AppendResult(msgspec.Struct, frozen=True):
    """Which of the appended events were new, and where they landed."""

    new: tuple[Recorded, ...]
    duplicates: tuple[str, ...]

    @property
    def new_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.new)


class Transaction:
    """A consumer's write transaction on the log file: its own tables plus its checkpoint."""

    def __init__(self, conn: aiosqlite.Connection, head_position: int) -> None:
        self.conn = conn
        self.head_position = head_position

    async def set_checkpoint(self, name: str, value: str, position: int | None = None) -> None:
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


class EventLog:
    """The SQLite event log. Open with ``await EventLog.open(path)``; close when done."""

    READ_CHUNK: Final = 2000

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
        self._log_id = ""
        self._head_pos = 0
        self._head_hash = GENESIS
        self._head_ts: str | None = None
        self._pending_pos = 0
        self._pending_head: tuple[int, bytes, str | None] = (0, GENESIS, None)

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
        """
        p = Path(path)
        lock = None
        if writer:
            p.parent.mkdir(parents=True, exist_ok=True)
            lock = WriterLock(p)
            lock.acquire()
            if not p.exists():
                # SQLite gives the -wal and -shm files the main file's mode.
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        elif not p.exists():
            raise FatalError(f"no event log at {p}")
        try:
            conn = await aiosqlite.connect(p, isolation_level=None)
        except sqlite3.Error as exc:
            if lock:
                lock.release()
            raise FatalError(f"cannot open the event log {p}: {exc}") from exc
        log = cls(p, conn, lock, clock or (lambda: datetime.now(UTC)))
        try:
            await log._init(writer, durability)
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
            await c.executescript(SCHEMA)
            await c.execute(
                "INSERT OR IGNORE INTO log_meta (key, value) VALUES ('log_id', ?), ('format', '1')",
                (str(uuid4()),),
            )
        try:
            rows = await c.execute_fetchall("SELECT value FROM log_meta WHERE key = 'log_id'")
        except sqlite3.Error as exc:
            raise LogCorruptError(f"{self.path} is not a ccsync event log: {exc}") from exc
        self._log_id = next(iter(rows))[0] if rows else ""
        await self._load_head()

    async def _load_head(self) -> None:
        rows = list(
            await self._conn.execute_fetchall(
                "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1"
            )
        )
        if rows:
            self._head_pos, self._head_hash, self._head_ts = rows[0]
        else:
            self._head_pos, self._head_hash, self._head_ts = 0, GENESIS, None

    async def close(self) -> None:
        await self._conn.close()
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
    ) -> AppendResult:
        """Append a batch atomically; events whose id is already stored are skipped.

        ``expected`` maps a stream to the version the caller last saw; a mismatch raises
        ConcurrencyError and appends nothing. ``checkpoints`` are written in the same
        transaction, so a fetcher's checkpoint never runs ahead of the events it covers.
        """
        if self._lock is None:
            raise FatalError("this log was opened read-only")
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = await self._append_in_tx(events, expected or {})
                if checkpoints:
                    await _write_checkpoints(self._conn, checkpoints, self._pending_pos)
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise
            self._head_pos, self._head_hash, self._head_ts = self._pending_head
            return result

    async def _rollback(self) -> None:
        try:
            await self._conn.execute("ROLLBACK")
        finally:
            await self._load_head()

    async def _append_in_tx(
        self, events: Sequence[NewEvent], expected: Mapping[str, int]
    ) -> AppendResult:
        c = self._conn
        ids = list(dict.fromkeys(e.id for e in events))
        seen: set[str] = set()
        for chunk in _chunks(ids, 900):
            q = f"SELECT event_id FROM events WHERE event_id IN ({_marks(len(chunk))})"
            seen.update(r[0] for r in await c.execute_fetchall(q, chunk))
        fresh: list[tuple[NewEvent, str]] = []
        taken: set[str] = set()
        for e in events:
            if e.id in seen or e.id in taken:
                continue
            taken.add(e.id)
            fresh.append((e, stream_of(e.event)))
        streams = list({s for _, s in fresh} | set(expected))
        versions: dict[str, int] = {}
        for chunk in _chunks(streams, 900):
            q = (
                "SELECT stream, MAX(version) FROM events "
                f"WHERE stream IN ({_marks(len(chunk))}) GROUP BY stream"
            )
            versions.update(await c.execute_fetchall(q, chunk))  # type: ignore[arg-type]
        for stream, want in expected.items():
            have = versions.get(stream, 0)
            if have != want:
                raise ConcurrencyError(stream, want, have)

        now = self._clock().astimezone(UTC)
        ts = format_ts(now)
        if self._head_ts is not None and ts < self._head_ts:
            ts, now = self._head_ts, parse_ts(self._head_ts)  # keep recorded_at monotonic
        pos, prev = self._head_pos, self._head_hash
        rows = []
        recorded = []
        for e, stream in fresh:
            pos += 1
            version = versions.get(stream, 0) + 1
            versions[stream] = version
            ev = e.event
            tag = ev.__struct_config__.tag
            assert isinstance(tag, str)
            payload = encode_event(ev)
            prev = row_hash(prev, pos, e.id, stream, version, tag, ev.schema_version, ts, payload)
            rows.append((pos, e.id, stream, version, tag, ev.schema_version, ts, payload, prev))
            recorded.append(Recorded(pos, e.id, stream, version, now, ev))
        if rows:
            try:
                await c.executemany(
                    f"INSERT INTO events ({_ROW_COLUMNS}, hash) VALUES (?,?,?,?,?,?,?,?,?)",
                    rows,
                )
            except sqlite3.IntegrityError as exc:
                raise ConcurrencyError("?", -1, -1) from exc
        self._pending_pos = pos
        self._pending_head = (pos, prev, ts if rows else self._head_ts)
        return AppendResult(tuple(recorded), tuple(sorted(seen & set(ids))))

    # --- consumers -----------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction for a consumer's tables and checkpoint, serialised with appends."""
        if self._lock is None:
            raise FatalError("this log was opened read-only")
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self._conn, self._head_pos)
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    @property
    def connection(self) -> aiosqlite.Connection:
        """The underlying connection, for consumers' reads of their own tables."""
        return self._conn

    async def checkpoint(self, name: str) -> str | None:
        rows = list(
            await self._conn.execute_fetchall(
                "SELECT value FROM checkpoints WHERE name = ?", (name,)
            )
        )
        return rows[0][0] if rows else None  # type: ignore[no-any-return]

    async def checkpoints(self) -> dict[str, tuple[str, int, str]]:
        """Every checkpoint: name -> (value, log position it was written at, updated_at)."""
        rows = await self._conn.execute_fetchall(
            "SELECT name, value, position, updated_at FROM checkpoints ORDER BY name"
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    # --- reading -------------------------------------------------------------------------

    async def head(self) -> Head:
        if self._lock is None:
            await self._load_head()
        return Head(self._log_id, self._head_pos, self._head_hash.hex(), self._head_ts)

    async def read(
        self, start: int = 1, stop: int | None = None, *, chunk: int | None = None
    ) -> AsyncIterator[Recorded]:
        """Events with ``start <= position < stop`` in order, in bounded memory."""
        size = chunk or self.READ_CHUNK
        pos = max(start, 1)
        upper = stop if stop is not None else 2**62
        while pos < upper:
            rows = await self._conn.execute_fetchall(
                f"SELECT {_ROW_COLUMNS} FROM events WHERE position >= ? AND position < ? "
                "ORDER BY position LIMIT ?",
                (pos, upper, size),
            )
            if not rows:
                return
            expect = pos
            for row in rows:
                if row[0] != expect:
                    raise LogCorruptError(
                        f"gap in the log: expected position {expect}, found {row[0]}"
                    )
                yield _recorded(row)
                expect += 1
            pos = expect

    async def read_stream(self, stream: str) -> list[Recorded]:
        """Every event of one stream, in version order."""
        rows = await self._conn.execute_fetchall(
            f"SELECT {_ROW_COLUMNS} FROM events WHERE stream = ? ORDER BY version", (stream,)
        )
        return [_recorded(r) for r in rows]

    async def position_at(self, when: datetime) -> int:
        """The first position recorded at or after ``when`` (head + 1 if none).

        recorded_at is monotonic in position, so this is a bisection on the primary key.
        """
        target = format_ts(when)
        lo, hi = 1, (await self.head()).position + 1
        while lo < hi:
            mid = (lo + hi) // 2
            rows = list(
                await self._conn.execute_fetchall(
                    "SELECT recorded_at FROM events WHERE position = ?", (mid,)
                )
            )
            if rows and rows[0][0] < target:
                lo = mid + 1
            else:
                hi = mid
        return lo

    async def read_time(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[Recorded]:
        """Events recorded in ``[since, until)``."""
        start = await self.position_at(since) if since else 1
        stop = await self.position_at(until) if until else None
        async for r in self.read(start, stop):
            yield r


def _recorded(row: sqlite3.Row | tuple[object, ...]) -> Recorded:
    pos, eid, stream, version, tag, sv, ts, payload = row
    event = decode_event(tag, sv, payload, position=pos)  # type: ignore[arg-type]
    return Recorded(pos, eid, stream, version, parse_ts(ts), event)  # type: ignore[arg-type]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(items: list[_T], size: int) -> list[list[_T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
