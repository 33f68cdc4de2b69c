"""Reads whose ``IN`` list may be longer than SQLite binds in one statement: sent in chunks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

__all__ = ["IN_CHUNK", "fetch_in"]

# Values per IN list: under 999, the bound-parameter limit of SQLite builds before 3.32.
IN_CHUNK: Final = 900


class _Reads(Protocol):
    """An aiosqlite connection, or a transaction's queue (engine._pending.Pending)."""

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any], /) -> Any: ...


async def fetch_in(
    conn: _Reads, sql: str, values: Sequence[Any], before: Sequence[Any] = ()
) -> list[Any]:
    """The rows of ``sql``, which ends in ``IN``, for every one of ``values``, ``IN_CHUNK`` at
    a time; ``before``: the statement's parameters that come before the list."""
    rows: list[Any] = []
    for i in range(0, len(values), IN_CHUNK):
        chunk = values[i : i + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows += await conn.execute_fetchall(f"{sql} ({marks})", (*before, *chunk))
    return rows
