"""Deletions found by a full scan: a contact the projection knows that a complete listing of
its store did not include is gone (stores without a change feed for deletes, e.g. an app
database without triggers, list their whole table now and then for this).

A scan notes the log position it started at (``scan_start``), and the ids its pages listed
that it found unchanged go to ``scan_seen``, both in the transaction that appends the page's
events, so a scan interrupted by a crash and resumed in a later run still has its first part.
A contact the scan found new or changed needs no note: its projected position moved past the
scan's start, and only this store's observation moves it. When an observation ends normally on
a full-scan page, the scan is complete: every live contact of the store whose position is at or
before the start and that is missing from ``scan_seen`` gets a ``contact.deleted``, then both
are cleared. (The first scan of an empty store, an initial sync, so writes no notes at all.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from engine._pending import Pending
from engine.events import ContactDeleted, content_id
from engine.log import EventLog, NewEvent
from engine.model import Store
from projections.runner import decode_contact

__all__ = ["clear_seen", "record_seen", "scan_deletions"]

# (Created on first use, inside the page's transaction; executescript would commit it.)
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS scan_seen (store TEXT NOT NULL, store_id TEXT NOT NULL, "
    "PRIMARY KEY (store, store_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS scan_start (store TEXT PRIMARY KEY, position INTEGER NOT NULL)",
)


async def _create(conn: Pending) -> None:
    for statement in _SCHEMA:
        await conn.execute(statement)


async def record_seen(conn: Pending, store: Store, start: int, unchanged: Sequence[str]) -> None:
    """Note, inside the page's own transaction, that a scan of ``store`` is under way since
    log position ``start`` (a scan resumed after a crash keeps its first start) and that it
    listed the ``unchanged`` ids."""
    await _create(conn)
    await conn.execute(
        "INSERT OR IGNORE INTO scan_start (store, position) VALUES (?, ?)", (store, start)
    )
    if unchanged:
        await conn.executemany(
            "INSERT OR IGNORE INTO scan_seen (store, store_id) VALUES (?, ?)",
            [(store, i) for i in unchanged],
        )


async def scan_deletions(log: EventLog, store: Store) -> list[NewEvent]:
    """Deletion events for live contacts of ``store`` the completed scan did not list; clears
    the scan's record (call only when the scan ended normally)."""
    conn = log.connection
    # Through the position index (``+p.store``: not the store's): after an initial sync no
    # contact is at or before the start, and that costs nothing.
    rows = await conn.execute_fetchall(
        "SELECT p.state FROM p_contacts p "
        "WHERE p.position <= (SELECT position FROM scan_start WHERE store = ?) AND +p.store = ? "
        "AND NOT EXISTS "
        "(SELECT 1 FROM scan_seen s WHERE s.store = p.store AND s.store_id = p.store_id)",
        (store, store),
    )
    out = []
    for (blob,) in rows:
        st = decode_contact(blob)
        if st.deleted:
            continue
        ev = ContactDeleted(store=store, key=st.store_id, email=st.email)
        out.append(NewEvent(content_id(ev, str(st.position)), ev))
    return out


async def clear_seen(log: EventLog, store: Store) -> None:
    async with log.transaction() as tx:
        await _create(tx.conn)
        await tx.conn.execute("DELETE FROM scan_seen WHERE store = ?", (store,))
        await tx.conn.execute("DELETE FROM scan_start WHERE store = ?", (store,))
