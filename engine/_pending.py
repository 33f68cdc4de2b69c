"""The writes of one SQLite transaction, queued and sent to the connection's thread together.

An aiosqlite connection runs each statement in its own thread, one at a time, and hands the
result back to the event loop. A transaction written statement by statement therefore
alternates: the thread waits while the loop builds the next rows, and the loop waits while the
thread writes them, so the two never work at once. Queued here, a transaction's writes are
sent as one job when something needs their effect (a read, or the COMMIT): the thread then
writes for as long as the job lasts while the loop goes on with other work (the next batch's
fetching and diffing), and a batch costs a round trip or two instead of one per statement.

Rows written while the loop's thread is busy are best queued with ``bulk``: they go as one
JSON array that SQLite expands itself (``json_each``), so the thread binds one parameter
instead of one per value. sqlite3 needs the GIL to bind each row of an executemany, and while
the loop's thread runs Python the writing thread waits for the GIL at every row:
scripts/bench/sqlite_bulk.py wrote 100,000 event rows in 1.44 s alone and 475 s beside a busy
thread, against 1.57 s and 1.89 s through ``json_each``. Alone, executemany is the faster.

Reads through ``execute_fetchall`` run after every write queued before them, in the same job,
so code inside a transaction still reads its own writes. An error in a queued write is raised
by the call that sends it (the read, or the COMMIT), and the transaction is rolled back.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

import aiosqlite
import msgspec

__all__ = ["Pending", "bulk_op", "json_statement"]

# (sql, parameters, executemany?)
_Op = tuple[str, Any, bool]
_Read = tuple[str, Sequence[Any]]


def _run(raw: sqlite3.Connection, ops: list[_Op], reads: list[_Read]) -> list[list[Any]]:
    """(In the connection's thread.) The queued writes, in order, then the reads."""
    for sql, params, many in ops:
        if many:
            raw.executemany(sql, params)
        else:
            raw.execute(sql, params)
    return [raw.execute(sql, params).fetchall() for sql, params in reads]


_json: Final = msgspec.json.Encoder()
_NUL: Final = b"\\u0000"  # how msgspec writes a NUL character inside a JSON string


def bulk_op(sql: str, rows: Iterable[Sequence[Any]], blobs: Sequence[int] = ()) -> _Op | None:
    """The statement to run for ``rows`` of ``sql`` (an ``INSERT ... VALUES (?, ...)`` or an
    ``UPDATE ... WHERE key = ?``): its json_each form (``json_statement``) with the rows as
    one JSON array (``?1``) and the ``blobs`` columns' bytes, which JSON cannot hold, joined
    in one blob (``?2``; in a row such a column holds the value's 1-based offset, and its
    length follows the row's last value; None stays NULL). Rows whose text holds a NUL
    character go through executemany instead: SQLite's JSON functions would cut the text
    there. None without rows.

    An UPDATE's rows are keyed by their last value, and the last row for a key wins, as it
    would one statement after another (an UPDATE ... FROM would take any one of them)."""
    listed = rows if isinstance(rows, list) else list(rows)
    if not listed:
        return None
    if sql.startswith("UPDATE"):
        listed = list({row[-1]: row for row in listed}.values())
    if not blobs:
        data, joined = _json.encode(listed), b""
    else:
        out: list[list[Any]] = []
        parts: list[bytes] = []
        offset = 1
        for row in listed:
            values = list(row)
            for i in blobs:
                blob: bytes | None = values[i]
                if blob is None:  # NULL: its offset stays null, and substr() of it is NULL
                    values.append(0)
                    continue
                values.append(len(blob))
                values[i] = offset
                parts.append(blob)
                offset += len(blob)
            out.append(values)
        # (Never empty: SQLite's substr of an empty blob is NULL, not an empty blob.)
        data, joined = _json.encode(out), b"".join(parts) or b"\0"
    if _NUL in data:
        return (sql, listed, True)
    return (json_statement(sql, tuple(blobs)), (data, joined) if blobs else (data,), False)


def _fill(text: str, values: Iterator[str]) -> Iterator[str]:
    """``text`` with each ``?`` replaced by the next of ``values``."""
    first, *rest = text.split("?")
    yield first
    for part in rest:
        yield next(values)
        yield part


@functools.cache
def json_statement(sql: str, blobs: tuple[int, ...] = ()) -> str:
    """``sql`` reading its ``?`` values from the rows of ``json_each(?1)`` (see ``bulk_op``):
    an ``INSERT ... VALUES (...) [ON CONFLICT ...]``, whose VALUES list may mix ``?`` with
    literals but holds no parentheses, or an ``UPDATE t SET ... WHERE ...`` (it becomes an
    UPDATE ... FROM json_each). No ``?`` may appear inside a literal."""
    if sql.startswith("UPDATE"):
        head, found, where = sql.partition(" WHERE ")
        if not found:
            raise ValueError(f"not an UPDATE ... WHERE statement: {sql}")
        width = sql.count("?")
        exprs = [f"j.value->>{i}" for i in range(width)]
        for k, i in enumerate(blobs):
            exprs[i] = f"substr(?2, j.value->>{i}, j.value->>{width + k})"
        taken = iter(exprs)
        head, where = ("".join(_fill(part, taken)) for part in (head, where))
        return f"{head} FROM json_each(?1) AS j WHERE {where}"
    head, found, rest = sql.partition(" VALUES (")
    inner, closed, tail = rest.partition(")")
    if not found or not closed:
        raise ValueError(f"not an INSERT ... VALUES (...) statement: {sql}")
    items = [item.strip() for item in inner.split(",")]
    width = items.count("?")
    exprs = [f"value->>{i}" for i in range(width)]
    for k, i in enumerate(blobs):
        exprs[i] = f"substr(?2, value->>{i}, value->>{width + k})"
    taken = iter(exprs)
    select = ", ".join(next(taken) if item == "?" else item for item in items)
    # (``WHERE true``: SQLite's grammar needs it between a SELECT and an ON CONFLICT.)
    return f"{head} SELECT {select} FROM json_each(?1) WHERE true{tail}"


class Pending:
    """A transaction's writes on ``conn``, sent in one job per read or flush."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._ops: list[_Op] = []
        self._on_commit: list[Callable[[], None]] = []

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """Queue one statement (a write: its result is not returned)."""
        self._ops.append((sql, parameters, False))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Queue one statement for each of ``rows`` (taken now, not when it runs)."""
        self._ops.append((sql, list(rows), True))

    async def bulk(
        self, sql: str, rows: Iterable[Sequence[Any]], blobs: Sequence[int] = ()
    ) -> None:
        """Queue ``sql`` (an INSERT ... VALUES or an UPDATE keyed by its last parameter) for
        each of ``rows``, sent as one parameter (``bulk_op``); ``blobs``: the columns that
        hold bytes."""
        op = bulk_op(sql, rows, blobs)
        if op is not None:
            self._ops.append(op)

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """The rows of a read, run after every write queued before it."""
        return (await self._send([(sql, parameters)]))[0]

    async def fetch_each(self, reads: Sequence[_Read]) -> list[list[Any]]:
        """The rows of each read (sql, parameters), in one job after the queued writes."""
        return await self._send(list(reads))

    async def flush(self, then: str | None = None) -> None:
        """Send the queued writes now, followed by statement ``then`` (e.g. ``COMMIT``)."""
        if then is not None:
            self._ops.append((then, (), False))
        if self._ops:
            await self._send([])

    def discard(self) -> None:
        """Forget the writes not yet sent and the commit hooks (the transaction rolls back)."""
        self._ops.clear()
        self._on_commit.clear()

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once the transaction has committed (never if it rolls back)."""
        self._on_commit.append(hook)

    def committed(self) -> None:
        """(The transaction's owner, after COMMIT.) Run the commit hooks."""
        hooks, self._on_commit = self._on_commit, []
        for hook in hooks:
            hook()

    async def _send(self, reads: list[_Read]) -> list[list[Any]]:
        ops, self._ops = self._ops, []
        conn = self._conn
        # aiosqlite has no public call for "run this function in the connection's thread";
        # its private _execute is that call (pinned in pyproject; tests/log cover this module).
        rows: list[list[Any]] = await conn._execute(_run, conn._conn, ops, reads)  # type: ignore[no-untyped-call]
        return rows
