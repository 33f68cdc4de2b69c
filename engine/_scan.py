"""Deletions found by a full scan: a contact the projection knows that a complete listing of
its store did not include is gone (stores without a change feed for deletes, e.g. an app
database without triggers, list their whole table now and then for this).

The ids each full-scan page listed go to ``scan_seen`` in the transaction that appends the
page's events, so a scan interrupted by a crash and resumed in a later run still has its first
part. When an observation ends normally on a full-scan page, the scan is complete: every live
contact of the store missing from ``scan_seen`` gets a ``contact.deleted``, then the table is
cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import aiosqlite

from engine.events import ContactDeleted, content_id
from engine.log import EventLog, NewEvent
from engine.model import Store
from projections.runner import decode_contact

__all__ = ["clear_seen", "record_seen", "scan_deletions"]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS scan_seen (store TEXT NOT NULL, store_id TEXT NOT NULL, "
    "PRIMARY KEY (store, store_id)) WITHOUT ROWID"
)


async def record_seen(conn: aiosqlite.Connection, store: Store, ids: Sequence[str]) -> None:
    """Note ``ids`` as listed by the scan in progress (inside the page's own transaction)."""
    await conn.execute(_SCHEMA)
    await conn.executemany(
        "INSERT OR IGNORE INTO scan_seen (store, store_id) VALUES (?, ?)",
        [(store, i) for i in ids],
    )


async def scan_deletions(log: EventLog, store: Store) -> list[NewEvent]:
    """Deletion events for live contacts of ``store`` the completed scan did not list; clears
    the scan's record (call only when the scan ended normally)."""
    conn = log.connection
    rows = await conn.execute_fetchall(
        "SELECT p.state FROM p_contacts p WHERE p.store = ? AND NOT EXISTS "
        "(SELECT 1 FROM scan_seen s WHERE s.store = p.store AND s.store_id = p.store_id)",
        (store,),
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
        await tx.conn.execute(_SCHEMA)
        await tx.conn.execute("DELETE FROM scan_seen WHERE store = ?", (store,))
