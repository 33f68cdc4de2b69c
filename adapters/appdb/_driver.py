"""The narrow seam under the adapter: what it needs from a SQL backend.

The observation and write logic is written once against ``Driver``; ``_sqlite`` and
``_postgres`` implement it over aiosqlite and asyncpg and translate their errors into
engine.errors here at the boundary. Bulk operations are primitives of the seam (not SQL text
built by callers) because the fast form differs: ``executemany`` for SQLite, ``unnest`` of one
text per column, cast to each column's type, for PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Literal, Protocol, TypeVar

__all__ = ["Driver", "Row", "as_text", "overlapped", "parse_time", "quote"]

Row = tuple[Any, ...]
_T = TypeVar("_T")


def quote(name: str) -> str:
    """Quote an identifier (optionally ``schema.table``); names were checked at config time."""
    return ".".join(f'"{part}"' for part in name.split("."))


def as_text(value: object) -> str | None:
    """A column value as the engine's field text (None stays None: an empty field)."""
    # Called for every non-text value observed: exact-type checks first, they are cheapest.
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is int or kind is Decimal or kind is float:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def parse_time(value: object) -> datetime | None:
    """A timestamp column's value as an aware UTC datetime (naive values are taken as UTC)."""
    # Called once or twice per observed row: the common cases come first and cheaply.
    if type(value) is str:
        try:
            ts = _fromiso(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):
        ts = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    else:
        return None
    tz = ts.tzinfo
    if tz is UTC:
        return ts
    return ts.replace(tzinfo=UTC) if tz is None else ts.astimezone(UTC)


_fromiso: Final = datetime.fromisoformat


async def overlapped(call: Awaitable[_T], meanwhile: Callable[[], None] | None) -> _T:
    """Await ``call``, running ``meanwhile`` once the call has sent its statement."""
    if meanwhile is None:
        return await call
    task = asyncio.ensure_future(call)
    # One turn of the loop: the task runs until it waits for the answer, its statement sent
    # (asyncpg writes to the socket; aiosqlite hands it to its thread). Were it not yet sent,
    # ``meanwhile`` would only run first: later, never wrong.
    await asyncio.sleep(0)
    try:
        meanwhile()
    except BaseException:
        await asyncio.wait({task})  # the connection is busy until the statement ends
        if not task.cancelled():
            task.exception()  # retrieved: the error of ``meanwhile`` is the one raised
        raise
    return await task


class Driver(Protocol):
    """One connection to the app's database, with the bulk primitives the adapter uses."""

    dialect: Literal["sqlite", "postgres"]

    async def close(self) -> None: ...

    async def columns(self, table: str) -> dict[str, str] | None:
        """Column name -> declared type, or None when the table does not exist."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query written with ``?`` placeholders; all rows."""
        ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def executescript(self, sql: str) -> None: ...

    def transaction(self, *, mark_writer: bool) -> AbstractAsyncContextManager[None]:
        """A write transaction; ``mark_writer`` makes the change triggers record ccsync."""
        ...

    def key_in(self, table: str, column: str, keys: Sequence[str]) -> tuple[str, list[Any]]:
        """SQL ``column IN keys`` (keys as text) and its parameters."""
        ...

    def text_in(self, expr: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """SQL ``expr IN values`` (a text expression, text values) and its parameters."""
        ...

    def key_param(self, table: str, column: str, key: str) -> Any:
        """One key (text) as a parameter comparable with ``table.column``."""
        ...

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
        """``UPDATE table SET columns WHERE key = ?`` for each row ``(key, *values)``, skipping
        rows that already hold the values; the number of rows changed. Keys must be distinct
        (callers keep the last of each). ``stamp`` (column, value): also set that column on
        the rows changed (the updated-at column, in the same write). ``meanwhile``: called
        once the statement is on its way, before waiting for it (work that needs no database
        runs while the database works)."""
        ...

    def keyed(self, table: str, key: str) -> AbstractAsyncContextManager[None]:
        """Within: ``update_rows`` on ``table`` keyed on ``key`` joins through the key's index
        (PostgreSQL would otherwise hash the whole table for every batch)."""
        ...

    async def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        returning: Sequence[str],
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> list[Row]:
        """Insert rows; the ``returning`` columns of each inserted row (in no set order).
        ``meanwhile``: as for ``update_rows``."""
        ...

    async def delete_rows(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Delete the rows matching each tuple of values of ``columns``."""
        ...

    async def insert_missing(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], match: int
    ) -> int:
        """Insert each row unless one equal on its first ``match`` columns exists; rows inserted."""
        ...

    async def insert_new(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert rows that cannot exist yet (distinct, and naming a contact this transaction
        created): no look before each row. One that collides with a unique key anyway (a row
        left over from a deleted contact whose key the table gave out again) is skipped."""
        ...

    def list_agg(self, sub_table: str, value_col: str, link_col: str, outer: str) -> str:
        """SQL for the sorted text values of ``sub_table.value_col`` linked to ``outer``."""
        ...

    def split_agg(self, value: object) -> tuple[str, ...]:
        """The Python value of a ``list_agg`` column as a sorted tuple of texts."""
        ...

    def group_keys(self, key_expr: str) -> str:
        """SQL aggregate joining a group's keys as text, separated by U+001F."""
        ...

    def is_text(self, table: str, column: str) -> bool:
        """Whether the column's values always come back as str (or None)."""
        ...

    def text_sql(self, table: str, column: str, expr: str) -> str | None:
        """SQL giving ``expr`` (a value of that column) as the very text ``as_text`` makes of
        it, when the database writes it alike (None: it does not; convert in Python)."""
        ...

    def cast_key(self, table: str, column: str, expr: str) -> str:
        """SQL casting ``expr`` (a key as the change table holds it) to the key's type."""
        ...

    def time_param(self, ts: datetime) -> Any:
        """A UTC time as a parameter comparable with the app's timestamp columns."""
        ...

    writer_table: str | None
    """SQLite: the table whose row marks ccsync's own transactions (None: no triggers)."""
