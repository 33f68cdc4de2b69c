"""The SQLite backend of the app database adapter, over aiosqlite.

Timestamps: SQLite has no time type, so the adapter reads and writes them as UTC text in
SQLite's own format (``YYYY-MM-DD HH:MM:SS.SSS``, what ``strftime('%Y-%m-%d %H:%M:%f')`` and
``CURRENT_TIMESTAMP`` produce) and compares them as text. An app storing another format must
say so in docs/appdb.md's terms before using column-based change detection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import aiosqlite

from adapters.appdb._driver import Row, overlapped, quote
from engine.errors import FatalError, RetriableError

__all__ = ["SqliteDriver", "sqlite_time"]

# SQLite's default limit on bound parameters per statement since 3.32.
_MAX_VARS: Final = 32000


def sqlite_time(ts: datetime) -> str:
    """A time as SQLite's UTC text (millisecond precision, like strftime('%f'))."""
    ts = ts.astimezone(UTC) if ts.tzinfo else ts
    return ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def translate(exc: sqlite3.Error, what: str) -> Exception:
    """sqlite3's errors as engine errors: a busy database may clear, the rest will not."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return RetriableError(f"app database: {what}: {text}")
    return FatalError(f"app database: {what}: {text}")


class SqliteDriver:
    """One aiosqlite connection in autocommit mode; transactions are explicit."""

    dialect: Literal["sqlite", "postgres"] = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._types: dict[str, dict[str, str]] = {}
        self.writer_table: str | None = None

    @classmethod
    async def connect(cls, path: str) -> SqliteDriver:
        """Open the database file (which must exist: ccsync never creates the app's database)."""
        # mode=rw: a mistyped path is an error, not a new empty database.
        if not path.startswith("file:") and not Path(path).is_file():
            raise FatalError(f"app database: no SQLite database at {path}")
        uri = path if path.startswith("file:") else f"{Path(path).resolve().as_uri()}?mode=rw"
        try:
            # Few cached statements: batched writes compile one multi-row statement per batch
            # size, and 128 of them (the default) held ~70 MB in a 100,000-contact sync.
            conn = await aiosqlite.connect(
                uri, uri=True, isolation_level=None, cached_statements=16
            )
            await conn.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as exc:
            raise FatalError(f"app database: cannot open {path}: {exc}") from None
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def columns(self, table: str) -> dict[str, str] | None:
        rows = await self.fetch(f"SELECT name, type FROM pragma_table_info('{table}')")
        if not rows:
            return None
        cols = {str(name): str(type_).upper() for name, type_ in rows}
        self._types[table] = cols
        return cols

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            rows = await self._conn.execute_fetchall(sql, tuple(params))
        except sqlite3.Error as exc:
            raise translate(exc, "query") from None
        return list(rows)  # type: ignore[arg-type]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            await self._conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise translate(exc, "statement") from None

    async def executescript(self, sql: str) -> None:
        try:
            await self._conn.executescript(sql)
        except sqlite3.Error as exc:
            raise translate(exc, "script") from None

    async def _executemany(
        self, sql: str, rows: Sequence[Row], meanwhile: Callable[[], None] | None = None
    ) -> int:
        try:
            cursor = await overlapped(self._conn.executemany(sql, rows), meanwhile)
        except sqlite3.Error as exc:
            raise translate(exc, "batch") from None
        return int(cursor.rowcount)

    @asynccontextmanager
    async def transaction(self, *, mark_writer: bool) -> AsyncIterator[None]:
        # IMMEDIATE takes the write lock up front, so a busy app shows as one clear retriable
        # error here rather than a deadlock half-way through a batch.
        await self.execute("BEGIN IMMEDIATE")
        try:
            if mark_writer and self.writer_table:
                # The row exists only inside this uncommitted transaction, and SQLite has one
                # writer at a time, so the triggers see it exactly for ccsync's own writes.
                await self.execute(f"INSERT INTO {quote(self.writer_table)} VALUES ('ccsync')")
            yield
            if mark_writer and self.writer_table:
                await self.execute(f"DELETE FROM {quote(self.writer_table)}")
            await self.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                await self._conn.rollback()
            raise

    def key_param(self, table: str, column: str, key: str) -> Any:
        if "INT" in self._types.get(table, {}).get(column, ""):
            try:
                return int(key)
            except ValueError:
                return key
        return key

    def key_in(self, table: str, column: str, keys: Sequence[str]) -> tuple[str, list[Any]]:
        params = [self.key_param(table, column, k) for k in keys]
        return f"{quote(column)} IN ({', '.join('?' * len(params))})", params

    def text_in(self, expr: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{expr} IN ({', '.join('?' * len(values))})", list(values)

    def is_text(self, table: str, column: str) -> bool:
        # Only TEXT affinity turns numbers into text on the way in (SQLite's affinity rules).
        declared = self._types.get(table, {}).get(column, "")
        return any(word in declared for word in ("CHAR", "CLOB", "TEXT"))

    def text_sql(self, table: str, column: str, expr: str) -> str | None:
        # An INTEGER column may hold reals and blobs too, whose CAST text differs from
        # Python's (1e+20 against 1.0e+20): every value is converted in Python.
        return None

    def cast_key(self, table: str, column: str, expr: str) -> str:
        return expr  # the change table keeps the key in its own type

    def time_param(self, ts: datetime) -> Any:
        return sqlite_time(ts)

    async def update_rows(
        self,
        table: str,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        stamp: tuple[str, Any] | None = None,
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> int:
        # Numbered parameters take each row as it comes, (key, *values), without re-packing.
        sets = ", ".join(f"{quote(c)} = ?{i + 2}" for i, c in enumerate(columns))
        if stamp is not None:
            # A constant: inlined as a literal (SQLite's text time; quotes doubled).
            text = str(stamp[1]).replace("'", "''")
            sets += f", {quote(stamp[0])} = '{text}'"
        # Rows already holding these values are left alone: no write, no change-table row.
        differs = " OR ".join(f"{quote(c)} IS NOT ?{i + 2}" for i, c in enumerate(columns))
        sql = f"UPDATE {quote(table)} SET {sets} WHERE {quote(key)} = ?1 AND ({differs})"
        return await self._executemany(sql, rows, meanwhile)

    @asynccontextmanager
    async def keyed(self, table: str, key: str) -> AsyncIterator[None]:
        yield  # SQLite's planner probes the key's index by itself

    async def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        returning: Sequence[str],
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> list[Row]:
        if not rows:
            return []
        cols = ", ".join(quote(c) for c in columns)
        ret = ", ".join(quote(c) for c in returning)
        one = "(" + ", ".join("?" * len(columns)) + ")"
        per = max(1, _MAX_VARS // max(1, len(columns)))
        out: list[Row] = []
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            values = ", ".join([one] * len(chunk))
            params = [v for row in chunk for v in row]
            sql = f"INSERT INTO {quote(table)} ({cols}) VALUES {values} RETURNING {ret}"
            out.extend(await overlapped(self.fetch(sql, params), meanwhile))
            meanwhile = None
        return out

    async def delete_rows(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        where = " AND ".join(f"{quote(c)} = ?" for c in columns)
        await self._executemany(f"DELETE FROM {quote(table)} WHERE {where}", rows)

    async def insert_missing(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], match: int
    ) -> int:
        cols = ", ".join(quote(c) for c in columns)
        marks = ", ".join("?" * len(columns))
        same = " AND ".join(f"{quote(c)} IS ?" for c in columns[:match])
        sql = (
            f"INSERT INTO {quote(table)} ({cols}) SELECT {marks} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(table)} WHERE {same})"
        )
        before = self._conn.total_changes
        await self._executemany(sql, [(*row, *row[:match]) for row in rows])
        return self._conn.total_changes - before

    async def insert_new(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        # Multi-row VALUES: for 150,000 memberships 0.67 s, against 2.7 s for the probing
        # executemany of insert_missing and 1.1 s for an executemany of this statement.
        cols = ", ".join(quote(c) for c in columns)
        one = "(" + ", ".join("?" * len(columns)) + ")"
        per = max(1, _MAX_VARS // max(1, len(columns)))
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            values = ", ".join([one] * len(chunk))
            await self.execute(
                f"INSERT INTO {quote(table)} ({cols}) VALUES {values} ON CONFLICT DO NOTHING",
                [v for row in chunk for v in row],
            )

    def group_keys(self, key_expr: str) -> str:
        return f"group_concat(CAST({key_expr} AS TEXT), char(31))"

    def list_agg(self, sub_table: str, value_col: str, link_col: str, outer: str) -> str:
        return (
            f"(SELECT group_concat(CAST({quote(value_col)} AS TEXT), char(31)) "
            f"FROM {quote(sub_table)} WHERE {quote(link_col)} = {outer})"
        )

    def split_agg(self, value: object) -> tuple[str, ...]:
        if not value:
            return ()
        return tuple(sorted(str(value).split("\x1f")))
