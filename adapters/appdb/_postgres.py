"""The PostgreSQL backend of the app database adapter, over asyncpg.

Bulk writes send each column of a batch as one text (U+001F between values, U+001E for NULL;
a text array when a value holds either) through ``unnest(string_to_array(...))`` and cast it
to the column's own type in SQL (``u.c::integer``): one round trip per batch whatever the
column types, with PostgreSQL's own input functions doing the parsing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, Literal

import asyncpg

from adapters.appdb._driver import Row, as_text, overlapped, quote
from engine.errors import ConfigError, FatalError, RetriableError

__all__ = ["PostgresDriver"]

_PLACEHOLDER: Final = re.compile(r"\?")
# A batch's column travels as one text: values separated by U+001F, NULL written as U+001E.
_SEP: Final = "\x1f"
_NULL: Final = "\x1e"


def translate(exc: BaseException, what: str) -> Exception:
    """asyncpg's errors as engine errors."""
    if isinstance(
        exc,
        asyncpg.exceptions.SerializationError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.LockNotAvailableError
        | asyncpg.exceptions.TooManyConnectionsError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | OSError,
    ):
        return RetriableError(f"app database: {what}: {exc}")
    if isinstance(exc, asyncpg.exceptions.UndefinedColumnError | asyncpg.UndefinedTableError):
        return ConfigError("appdb", f"{what}: {exc}")
    return FatalError(f"app database: {what}: {exc}")


def _numbered(sql: str) -> str:
    counter = iter(range(1, 1 << 30))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class PostgresDriver:
    """One asyncpg connection."""

    dialect: Literal["sqlite", "postgres"] = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._types: dict[str, dict[str, str]] = {}
        self._indexed: dict[str, set[str]] = {}
        self.writer_table: str | None = None
        # Observation reads one page ahead while the caller works on the last one; asyncpg
        # allows one operation at a time per connection, so operations take turns.
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, dsn: str, schema: str | None) -> PostgresDriver:
        """Connect (``schema`` goes first on the search path)."""
        settings = {"search_path": f"{schema}, public"} if schema else None
        try:
            conn = await asyncpg.connect(dsn, server_settings=settings)
            # No JIT compilation for this session: the correlated subqueries (lists, shared
            # emails) make a page look expensive to the planner, and compiling every page
            # took ~100 ms of a ~10 ms query (observation 10-18x slower with memberships).
            await conn.execute(
                "SELECT set_config('jit', 'off', false) FROM pg_settings WHERE name = 'jit'"
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The DSN may hold a password: name the failure, never the DSN.
            raise FatalError(f"app database: cannot connect to PostgreSQL: {exc}") from None
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def columns(self, table: str) -> dict[str, str] | None:
        rows = await self.fetch(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(?) AND a.attnum > 0 AND NOT a.attisdropped",
            (quote(table),),
        )
        if not rows:
            return None
        cols = {str(n): str(t) for n, t in rows}
        self._types[table] = cols
        # Columns that lead an index: a batch keyed on one is joined row by row through the
        # index (see ``keyed``).
        lead = await self.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = to_regclass(?)",
            (quote(table),),
        )
        self._indexed[table] = {str(r[0]) for r in lead}
        return cols

    def _type(self, table: str, column: str) -> str:
        return self._types.get(table, {}).get(column, "text")

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            async with self._lock:
                rows = await self._conn.fetch(_numbered(sql), *params)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate(exc, "query") from None
        return [tuple(r) for r in rows]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            async with self._lock:
                await self._conn.execute(_numbered(sql), *params)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate(exc, "statement") from None

    async def executescript(self, sql: str) -> None:
        try:
            async with self._lock:
                await self._conn.execute(sql)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate(exc, "script") from None

    async def _status(
        self, sql: str, params: Sequence[Any], meanwhile: Callable[[], None] | None = None
    ) -> str:
        try:
            async with self._lock:
                return str(await overlapped(self._conn.execute(sql, *params), meanwhile))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate(exc, "batch") from None

    @asynccontextmanager
    async def transaction(self, *, mark_writer: bool) -> AsyncIterator[None]:
        tx = self._conn.transaction()
        try:
            async with self._lock:
                await tx.start()
                if mark_writer:
                    # Transaction-local: the change triggers read it; it ends with the commit.
                    await self._conn.execute("SELECT set_config('ccsync.writer', 'ccsync', true)")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate(exc, "begin") from None
        try:
            yield
        except BaseException:
            async with self._lock:
                await tx.rollback()
            raise
        try:
            async with self._lock:
                await tx.commit()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate(exc, "commit") from None

    def key_param(self, table: str, column: str, key: str) -> Any:
        kind = self._type(table, column)
        if kind in ("integer", "bigint", "smallint"):
            try:
                return int(key)
            except ValueError:
                return key
        return key

    def key_in(self, table: str, column: str, keys: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{quote(column)} = ANY(?::text[]::{self._type(table, column)}[])", [list(keys)]

    def text_in(self, expr: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        # One array parameter: one prepared statement whatever the count (a list of 5,000
        # placeholders was parsed and planned anew for every batch). A semi-join, not
        # '= ANY(?)': after five runs PostgreSQL may switch a prepared statement to its generic
        # plan, where '= ANY' of a parameter is a linear search of the array for every row.
        joined = _SEP.join(values)
        if values and joined.count(_SEP) == len(values) - 1 and "" not in values:
            # One text split in the server, as for writes (asyncpg encodes a text[] element
            # by element: 5,000 emails a batch cost 5 ms of the client's time, this 0.8 ms).
            return f"{expr} IN (SELECT unnest(string_to_array(?::text, chr(31))))", [joined]
        return f"{expr} IN (SELECT unnest(?::text[]))", [list(values)]

    def is_text(self, table: str, column: str) -> bool:
        kind = self._type(table, column)
        return kind == "text" or kind.startswith(("character varying", "character("))

    def text_sql(self, table: str, column: str, expr: str) -> str | None:
        # PostgreSQL writes integers as Python does; other types differ (booleans 't', times
        # with a space, floats' infinities), so they stay with as_text.
        if self._type(table, column) in ("smallint", "integer", "bigint"):
            return f"{expr}::text"
        return None

    def cast_key(self, table: str, column: str, expr: str) -> str:
        return f"{expr}::{self._type(table, column)}"

    def time_param(self, ts: datetime) -> Any:
        return ts.astimezone(UTC)

    def _unnest(
        self, table: str, columns: Sequence[str], rows: Sequence[Row]
    ) -> tuple[str, list[Any]]:
        params: list[Any] = []
        args: list[str] = []
        for col in zip(*rows, strict=True):
            n = len(params) + 1
            first = col[0]
            if type(first) is not str and first is not None and all(v is first for v in col):
                texts = [as_text(first)] * len(col)  # one value for all (the updated-at stamp)
            else:
                texts = [v if type(v) is str else _NULL if v is None else as_text(v) for v in col]
            joined = _SEP.join(texts)  # type: ignore[arg-type]
            # One text per column, split in the server: asyncpg encodes a text[] element by
            # element (with type checks), which cost more than the UPDATE's own writes. A column
            # holding either control character (never seen in contact data) goes as an array,
            # and so does a single '' (string_to_array('') is an empty array).
            if (
                joined
                and joined.count(_SEP) == len(texts) - 1
                and joined.count(_NULL) == col.count(None)
            ):
                params.append(joined)
                args.append(f"string_to_array(${n}::text, chr(31), chr(30))")
            else:
                params.append([None if v is _NULL else v for v in texts])
                args.append(f"${n}::text[]")
        names = ", ".join(f"c{i}" for i in range(len(columns)))
        return f"unnest({', '.join(args)}) AS u({names})", params

    def _cast(self, table: str, columns: Sequence[str]) -> list[str]:
        return [f"u.c{i}::{self._type(table, c)}" for i, c in enumerate(columns)]

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
        allcols = [key, *columns]
        src, arrays = self._unnest(table, allcols, rows)
        casts = self._cast(table, allcols)
        sets = ", ".join(f"{quote(c)} = {casts[i + 1]}" for i, c in enumerate(columns))
        params: list[Any] = list(arrays)
        if stamp is not None:
            params.append(stamp[1])
            sets += f", {quote(stamp[0])} = ${len(params)}"
        # Rows already holding these values are left alone: no write, no change-table row.
        differs = " OR ".join(
            f"t.{quote(c)} IS DISTINCT FROM {casts[i + 1]}" for i, c in enumerate(columns)
        )
        sql = (
            f"UPDATE {quote(table)} AS t SET {sets} FROM {src} "
            f"WHERE t.{quote(key)} = {casts[0]} AND ({differs})"
        )
        return int((await self._status(sql, params, meanwhile)).rsplit(" ", 1)[-1])

    @asynccontextmanager
    async def keyed(self, table: str, key: str) -> AsyncIterator[None]:
        if key not in self._indexed.get(table, ()):
            yield
            return
        # A batch is small beside the table, and the key is indexed: one index probe per row.
        # The planner prefers hashing the whole table for every batch (it prices a probe as a
        # random read from disk), which made the join cost as much as the writes. Scoped to
        # the block: the other statements of the transaction plan as usual. (On an error the
        # transaction is rolled back, and the settings with it.)
        await self._status("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off", ())
        yield
        await self._status("RESET enable_hashjoin; RESET enable_mergejoin", ())

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
        src, arrays = self._unnest(table, columns, rows)
        cols = ", ".join(quote(c) for c in columns)
        ret = ", ".join(quote(c) for c in returning)
        sql = (
            f"INSERT INTO {quote(table)} ({cols}) SELECT {', '.join(self._cast(table, columns))} "
            f"FROM {src} RETURNING {ret}"
        )
        try:
            async with self._lock:
                made = await overlapped(self._conn.fetch(sql, *arrays), meanwhile)
                return [tuple(r) for r in made]
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise translate(exc, "insert") from None

    async def delete_rows(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        src, arrays = self._unnest(table, columns, rows)
        casts = self._cast(table, columns)
        where = " AND ".join(f"t.{quote(c)} = {casts[i]}" for i, c in enumerate(columns))
        await self._status(f"DELETE FROM {quote(table)} AS t USING {src} WHERE {where}", arrays)

    async def insert_missing(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], match: int
    ) -> int:
        src, arrays = self._unnest(table, columns, rows)
        casts = self._cast(table, columns)
        cols = ", ".join(quote(c) for c in columns)
        same = " AND ".join(
            f"t.{quote(c)} IS NOT DISTINCT FROM {casts[i]}" for i, c in enumerate(columns[:match])
        )
        sql = (
            f"INSERT INTO {quote(table)} ({cols}) SELECT DISTINCT ON ({', '.join(casts[:match])}) "
            f"{', '.join(casts)} FROM {src} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {quote(table)} AS t WHERE {same})"
        )
        status = await self._status(sql, arrays)
        return int(status.rsplit(" ", 1)[-1])

    async def insert_new(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        src, arrays = self._unnest(table, columns, rows)
        cols = ", ".join(quote(c) for c in columns)
        sql = (
            f"INSERT INTO {quote(table)} ({cols}) SELECT {', '.join(self._cast(table, columns))} "
            f"FROM {src} ON CONFLICT DO NOTHING"
        )
        await self._status(sql, arrays)

    def group_keys(self, key_expr: str) -> str:
        return f"string_agg({key_expr}::text, chr(31))"

    def list_agg(self, sub_table: str, value_col: str, link_col: str, outer: str) -> str:
        return (
            f"ARRAY(SELECT {quote(value_col)}::text FROM {quote(sub_table)} "
            f"WHERE {quote(link_col)} = {outer})"
        )

    def split_agg(self, value: object) -> tuple[str, ...]:
        if not value:
            return ()
        assert isinstance(value, list)
        return tuple(sorted(str(v) for v in value))
