"""The projection runner: folds recorded events into the projection tables, batch by batch,
with its checkpoint in the same transaction.

The fold per entity is pure (projections.contacts.evolve_contact and the small folds below);
this module only loads the affected rows, folds in position order, and writes them back. The
same code serves the live projections (tables in the log's file) and rebuilds (another file),
so a rebuild from position 0 must equal the live state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

import aiosqlite
import msgspec

from engine._inlist import fetch_in
from engine._pending import Pending
from engine.commands import TRACKING_KIND
from engine.events import (
    CommandApplied,
    CommandConfirmed,
    CommandFailed,
    CommandIssued,
    CommandSuperseded,
    ContactObserved,
    DecisionBlocked,
    IdentityLinked,
    ListChanged,
    ListDeleted,
    ListObserved,
    PermissionChanged,
    RecordRejected,
    SyncRunFinished,
    SyncRunStarted,
    TrackingRecorded,
)
from engine.log import Recorded, format_ts
from engine.model import ListRecord
from projections.contacts import CONTACT_EVENTS, ContactState, evolve_contact
from projections.schema import CHECKPOINT, PROJECTION_SCHEMA, VERSION, statements

__all__ = [
    "apply_batch",
    "decode_contact",
    "decode_list",
    "ensure_schema",
    "load_contacts",
    "projected_position",
    "projection_layout",
]

_state_enc: Final = msgspec.msgpack.Encoder()
_contact_dec: Final = msgspec.msgpack.Decoder(ContactState)
_list_dec: Final = msgspec.msgpack.Decoder(ListRecord)
_json: Final = msgspec.json.Encoder()
# A command's row holds no body: it stays in the command's command.issued event (a copy of every
# body made the rows a sixth of the first cycle's time). A command left without success is
# decided again from the stores' state; a tracking record, resent as it was, is read back from
# that event (engine.outbox).
_ISSUE: Final = (
    "INSERT INTO p_commands (command_id, target, kind, email, status, attempts, "
    "issued_position, issued_at) VALUES (?,?,?,?, 'issued', 1, ?, ?) "
    "ON CONFLICT (command_id) DO UPDATE SET status = 'issued', attempts = attempts + 1, "
    "issued_position = excluded.issued_position, issued_at = excluded.issued_at"
)
# A tracking record is data the app took: nothing observes it back, so it is settled once
# applied ('delivered'), not left open among the commands awaiting confirmation.
_APPLIED: Final = (
    f"UPDATE p_commands SET status = IIF(kind = '{TRACKING_KIND}', 'delivered', 'applied'), "
    "outcome_position = ?, outcome_at = ?, error = ?, retriable = NULL WHERE command_id = ?"
)
_CREATED: Final = (
    "INSERT OR REPLACE INTO p_created (store, email, source_id, position) VALUES (?,?,?,?)"
)
# A new pair replaces any earlier pair of either contact: REPLACE drops every row clashing on
# either unique column.
_LINK: Final = "INSERT OR REPLACE INTO p_links (ctct_id, app_id, email, position) VALUES (?,?,?,?)"
_CONTACTS_UPSERT: Final = (
    "INSERT INTO p_contacts (store, store_id, email, position, state) VALUES (?,?,?,?,?) "
    "ON CONFLICT (store, store_id) DO UPDATE SET email = excluded.email, "
    "position = excluded.position, state = excluded.state"
)
# The same for contacts whose stored email it keeps. SQLite rewrites an index entry whenever an
# UPDATE assigns one of its columns, changed or not: assigning the email rewrote an entry of
# p_contacts_email, a page at random in it, for every contact a cycle touched (a third of the
# upsert's time and of its commit's, at 1,000,000 contacts).
_CONTACTS_UPSERT_SAME_EMAIL: Final = (
    "INSERT INTO p_contacts (store, store_id, email, position, state) VALUES (?,?,?,?,?) "
    "ON CONFLICT (store, store_id) DO UPDATE SET "
    "position = excluded.position, state = excluded.state"
)


async def ensure_schema(conn: Pending) -> bool:
    """Create the projection tables; returns True when an older layout was dropped (the
    projections then rebuild from position 0)."""
    dropped = False
    existing = {
        r[0]
        for r in await conn.execute_fetchall(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'p\\_%' ESCAPE '\\'"
        )
    }
    if existing:
        version = await projection_layout(conn) if "p_meta" in existing else None
        if version != VERSION:
            for table in sorted(existing):
                await conn.execute(f"DROP TABLE {table}")
            dropped = True
    # Statement by statement: executescript() would COMMIT the caller's transaction.
    for statement in statements(PROJECTION_SCHEMA):
        await conn.execute(statement)
    await conn.execute(
        "INSERT OR IGNORE INTO p_meta (key, value) VALUES ('version', ?)", (VERSION,)
    )
    return dropped


async def projection_layout(conn: aiosqlite.Connection | Pending) -> str | None:
    """The layout version the projection tables in this file were written with (None: no
    projections, or a build from before versions were recorded)."""
    try:
        rows = list(await conn.execute_fetchall("SELECT value FROM p_meta WHERE key = 'version'"))
    except sqlite3.OperationalError:  # no p_meta table
        return None
    return str(rows[0][0]) if rows else None


async def projected_position(conn: aiosqlite.Connection | Pending) -> int:
    rows = list(
        await conn.execute_fetchall(
            "SELECT position FROM p_checkpoint WHERE name = ?", (CHECKPOINT,)
        )
    )
    return int(rows[0][0]) if rows else 0


def decode_contact(blob: bytes) -> ContactState:
    return _contact_dec.decode(blob)


def decode_list(blob: bytes) -> ListRecord:
    return _list_dec.decode(blob)


async def load_contacts(
    conn: aiosqlite.Connection | Pending, store: str, ids: Iterable[str]
) -> dict[str, ContactState]:
    """Projected states of ``ids`` in ``store`` (missing ids are absent from the result)."""
    sql = "SELECT store_id, state FROM p_contacts WHERE store = ? AND store_id IN"
    rows = await fetch_in(conn, sql, list(ids), (store,))
    return {sid: _contact_dec.decode(blob) for sid, blob in rows}


async def apply_batch(conn: Pending, batch: Sequence[Recorded]) -> None:
    """Fold ``batch`` (consecutive, in position order) into the tables; the caller commits."""
    if not batch:
        return
    contacts, stored_email = await _fold_contacts(conn, batch)
    if contacts:
        same: list[tuple[object, ...]] = []
        other: list[tuple[object, ...]] = []
        for s in contacts:
            row = (s.store, s.store_id, s.email, s.position, _state_enc.encode(s))
            (same if stored_email.get((s.store, s.store_id)) == s.email else other).append(row)
        await conn.bulk(_CONTACTS_UPSERT_SAME_EMAIL, same, (4,))
        await conn.bulk(_CONTACTS_UPSERT, other, (4,))
    await _fold_rest(conn, batch)
    await conn.execute(
        "INSERT INTO p_checkpoint (name, position) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        (CHECKPOINT, batch[-1].position),
    )


async def _fold_contacts(
    conn: Pending, batch: Sequence[Recorded]
) -> tuple[list[ContactState], dict[tuple[str, str], str]]:
    """The contacts ``batch`` changes, folded; and the stored email of those it loaded (a
    first sight loads nothing: its row is new, or is replaced whole)."""
    keys: dict[str, set[str]] = {}
    for r in batch:
        ev = r.event
        if isinstance(ev, CONTACT_EVENTS) and not isinstance(ev, ContactObserved):
            keys.setdefault(ev.store, set()).add(ev.key)
    states: dict[tuple[str, str], ContactState | None] = {}
    stored_email: dict[tuple[str, str], str] = {}
    for store, ids in keys.items():
        for sid, st in (await load_contacts(conn, store, ids)).items():
            states[(store, sid)] = st
            stored_email[(store, sid)] = st.email
    touched: dict[tuple[str, str], ContactState] = {}
    for r in batch:
        ev = r.event
        if not isinstance(ev, CONTACT_EVENTS):
            continue
        k = (ev.store, ev.key)
        new = evolve_contact(states.get(k), ev, r.position)
        if new is not None:
            states[k] = new
            touched[k] = new
    return list(touched.values()), stored_email


class _Writes:
    """Statements in event order, consecutive runs of one statement sent as one bulk statement
    (engine._pending.bulk_op): the order of effects is kept while a batch costs a few
    statements, not one per event.

    A run is one statement *object* (compared with ``is``, the cheapest test in the hottest
    loop): pass a literal or a module constant, never text built per event (an f-string in
    the loop made every row a statement of its own, and cost the initial sync 2-4 s)."""

    def __init__(self) -> None:
        self._groups: list[tuple[str, tuple[int, ...], list[tuple[object, ...]]]] = []

    def add(self, sql: str, params: tuple[object, ...], blobs: tuple[int, ...] = ()) -> None:
        if self._groups and self._groups[-1][0] is sql:
            self._groups[-1][2].append(params)
        else:
            self._groups.append((sql, blobs, [params]))

    async def flush(self, conn: Pending) -> None:
        for sql, blobs, rows in self._groups:
            await conn.bulk(sql, rows, blobs)
        self._groups.clear()


async def _fold_rest(conn: Pending, batch: Sequence[Recorded]) -> None:
    perms: list[tuple[object, ...]] = []
    tracking: list[tuple[object, ...]] = []
    w = _Writes()
    stamp, at = None, ""
    for r in batch:
        ev, pos = r.event, r.position
        if r.recorded_at is not stamp:  # the events of one append share their time
            stamp, at = r.recorded_at, format_ts(r.recorded_at)
        match ev:
            case ContactObserved(contact=c) if c.permission.status != "not_set":
                p = c.permission
                perms.append(
                    (
                        pos,
                        ev.store,
                        ev.key,
                        c.email,
                        None,
                        p.status,
                        p.source,
                        p.reason,
                        _ts(p.changed_at),
                        None,
                        at,
                    )
                )
            case PermissionChanged(old=old, new=p):
                perms.append(
                    (
                        pos,
                        ev.store,
                        ev.key,
                        ev.email,
                        old.status if old else None,
                        p.status,
                        p.source,
                        p.reason,
                        _ts(p.changed_at),
                        ev.campaign_activity_id,
                        at,
                    )
                )
            case TrackingRecorded(activity=a):
                tracking.append(
                    (
                        ev.store,
                        a.contact_id,
                        a.campaign_activity_id,
                        a.kind,
                        format_ts(a.created_time),
                        a.email,
                        pos,
                        _json.encode(a),
                    )
                )
            case ListObserved(list=lst):
                await w.flush(conn)
                await _put_list(conn, ev.store, lst, pos)
            case ListChanged(changes=changes):
                await w.flush(conn)
                old_list = await _get_list(conn, ev.store, ev.key)
                if old_list is not None:
                    upd = {k: v.new for k, v in changes.items() if k in ("name", "description")}
                    await _put_list(conn, ev.store, msgspec.structs.replace(old_list, **upd), pos)
            case ListDeleted():
                await w.flush(conn)
                old_list = await _get_list(conn, ev.store, ev.key)
                if old_list is not None:
                    await _put_list(
                        conn, ev.store, msgspec.structs.replace(old_list, deleted=True), pos
                    )
            case IdentityLinked(app_id=app_id, email=email):
                # (a re-link after the old partner was deleted and the address came back on
                # another contact replaces the old pair: see _LINK)
                w.add(_LINK, (ev.key, app_id, email, pos))
            case CommandConfirmed(command_ids=ids):
                for cid in ids:
                    w.add(
                        "UPDATE p_commands SET status = 'confirmed', confirmed_at = ?, "
                        "confirmed_position = ? WHERE command_id = ?",
                        (at, pos, cid),
                    )
            case CommandSuperseded(reason=reason, successor=successor):
                w.add(
                    # An applied command keeps its outcome (when the store took it); the
                    # supersession is read with the command's own stream.
                    "UPDATE p_commands SET status = 'superseded', error = ?, superseded_by = ?, "
                    "outcome_position = IIF(status = 'applied', outcome_position, ?), "
                    "outcome_at = IIF(status = 'applied', outcome_at, ?) WHERE command_id = ?",
                    (reason, successor, pos, at, ev.key),
                )
            case CommandIssued(commands=issued):
                for ic in issued:
                    email = str(ic.command.get("email", ""))
                    w.add(_ISSUE, (ic.command_id, ev.store, ic.kind, email, pos, at))
            case CommandApplied(applied=applied):
                for done in applied:
                    w.add(_APPLIED, (pos, at, done.detail, done.command_id))
                # Contacts the commands created, paired with those they were made from; or,
                # where the store did not say the new contact's id, the address to pair by.
                for done in applied:
                    if (pair := done.paired) is not None:
                        w.add(_LINK, (pair.ctct_id, pair.app_id, pair.email, pos))
                    elif (made := done.created) is not None:
                        w.add(_CREATED, (ev.store, made.email, made.source_id, pos))
            case CommandFailed(error=error, retriable=retriable):
                w.add(
                    "UPDATE p_commands SET status = 'failed', outcome_position = ?, "
                    "outcome_at = ?, error = ?, retriable = ? WHERE command_id = ?",
                    (pos, at, error, int(retriable), ev.key),
                )
            case DecisionBlocked(email=email, action=action, reason=reason):
                w.add(
                    "INSERT INTO p_decisions (position, store_key, email, action, reason, "
                    "recorded_at) VALUES (?,?,?,?,?,?)",
                    (pos, ev.key, email, action, reason, at),
                )
            case RecordRejected(field=field, problem=problem):
                w.add(
                    "INSERT INTO p_rejected (position, store, record, field, problem, recorded_at) "
                    "VALUES (?,?,?,?,?,?)",
                    (pos, ev.store, ev.key, field, problem, at),
                )
            case SyncRunStarted(bound=bound, mode=mode):
                w.add(
                    "INSERT OR IGNORE INTO p_runs (run_id, mode, bound, started_position, "
                    "started_at) VALUES (?,?,?,?,?)",
                    (ev.key, mode, format_ts(bound), pos, at),
                )
            case SyncRunFinished(outcome=outcome, counts=counts, error=error):
                w.add(
                    "UPDATE p_runs SET finished_at = ?, outcome = ?, counts = ?, error = ? "
                    "WHERE run_id = ?",
                    (at, outcome, _json.encode(counts), error, ev.key),
                    (2,),
                )
            case _:
                pass
    await w.flush(conn)
    await conn.bulk(
        "INSERT INTO p_permissions (position, store, store_id, email, old_status, new_status, "
        "source, reason, source_time, campaign_activity_id, recorded_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        perms,
    )
    await conn.bulk(
        "INSERT OR IGNORE INTO p_tracking (store, contact_id, campaign_activity_id, kind, "
        "created_time, email, position, activity) VALUES (?,?,?,?,?,?,?,?)",
        tracking,
        (7,),
    )


def _ts(value: object) -> str | None:
    return format_ts(value) if isinstance(value, datetime) else None


async def _get_list(conn: Pending, store: str, sid: str) -> ListRecord | None:
    rows = list(
        await conn.execute_fetchall(
            "SELECT state FROM p_lists WHERE store = ? AND store_id = ?", (store, sid)
        )
    )
    return _list_dec.decode(rows[0][0]) if rows else None


async def _put_list(conn: Pending, store: str, lst: ListRecord, pos: int) -> None:
    await conn.execute(
        "INSERT INTO p_lists (store, store_id, position, state) VALUES (?,?,?,?) "
        "ON CONFLICT (store, store_id) DO UPDATE SET position = excluded.position, "
        "state = excluded.state",
        (store, lst.store_id, pos, _state_enc.encode(lst)),
    )
