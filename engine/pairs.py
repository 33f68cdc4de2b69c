"""Find, for contacts touched since a position, their counterpart in the other store.

Identity across stores is the normalised email (engine.model.normalise_email), and once two
contacts are paired the pair is recorded (``identity.linked``) and outlives email changes: each
store's own id is stable, the address is not. A contact ccsync created is paired with the one it
was made from by the create's outcome (``AppliedCommand.paired``); where the store did not say
the new id, by the address it was made under (p_created), whichever of the two has changed its
address since.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Final

import aiosqlite

from engine._inlist import fetch_in
from engine.reconcile import Pair
from projections.contacts import ContactState
from projections.runner import decode_contact, load_contacts

__all__ = ["app_links", "app_partners", "by_email_sql", "pairs_for_emails", "touched_pairs"]

_CHUNK: Final = 2000


def _marks(n: int) -> str:
    return ",".join("?" * n)


async def _links(conn: aiosqlite.Connection, column: str, ids: list[str]) -> dict[str, str]:
    other = "app_id" if column == "ctct_id" else "ctct_id"
    sql = f"SELECT {column}, {other} FROM p_links WHERE {column} IN"
    return {str(a): str(b) for a, b in await fetch_in(conn, sql, ids)}


async def _by_email(
    conn: aiosqlite.Connection, emails: list[str], store: str | None = None
) -> list[ContactState]:
    """Contacts holding one of ``emails``, of one store or of both."""
    before = () if store is None else (store,)
    rows = await fetch_in(conn, _by_email_head(store), emails, before)
    return [decode_contact(r[0]) for r in rows]


def _by_email_head(store: str | None) -> str:
    # Through the email index: ``+store`` keeps the planner off the (store, id) index, which
    # without statistics it preferred, reading every contact of the store for each chunk.
    where = "" if store is None else "+store = ? AND "
    return f"SELECT state FROM p_contacts WHERE {where}email IN"


def by_email_sql(n: int, store: str | None) -> str:
    """The lookup of ``n`` addresses (of one store: its name is the first parameter), as
    ``_by_email`` sends it."""
    return f"{_by_email_head(store)} ({_marks(n)})"


async def _pairs_for(conn: aiosqlite.Connection, touched: list[ContactState]) -> list[Pair]:
    ctct_ids = [s.store_id for s in touched if s.store == "ctct"]
    app_ids = [s.store_id for s in touched if s.store == "app"]
    c2a = await _links(conn, "ctct_id", ctct_ids)
    a2c = await _links(conn, "app_id", app_ids)
    partners_ctct = await load_contacts(conn, "ctct", [a2c[i] for i in app_ids if i in a2c])
    partners_app = await load_contacts(conn, "app", [c2a[i] for i in ctct_ids if i in c2a])
    unlinked = [s for s in touched if s.store_id not in (c2a if s.store == "ctct" else a2c)]
    # Partners by address are looked for in the other store only (the touched contacts
    # themselves hold these addresses: an initial sync would read each of them back).
    candidates = [
        *await _by_email(conn, sorted({s.email for s in unlinked if s.store == "app"}), "ctct"),
        *await _by_email(conn, sorted({s.email for s in unlinked if s.store == "ctct"}), "app"),
    ]
    cand_c = [s.store_id for s in candidates if s.store == "ctct"]
    cand_a = [s.store_id for s in candidates if s.store == "app"]
    # A candidate is taken when it is paired with a live contact; a pair whose other side was
    # deleted yields to a live contact that now holds the address (its opt-out must reach it).
    cand_links = {**await _links(conn, "ctct_id", cand_c), **await _links(conn, "app_id", cand_a)}
    their_c = await load_contacts(conn, "ctct", [v for k, v in cand_links.items() if k in cand_a])
    their_a = await load_contacts(conn, "app", [v for k, v in cand_links.items() if k in cand_c])
    taken = {
        k
        for k, v in cand_links.items()
        if (p := (their_a.get(v) if k in cand_c else their_c.get(v))) is not None and not p.deleted
    }
    free: dict[tuple[str, str], ContactState] = {}
    for s in candidates:
        if s.store_id not in taken:
            free.setdefault((s.store, s.email), s)
    lone = [s for s in unlinked if (_OTHER[s.store], s.email) not in free]
    free.update(await _made_partners(conn, lone))

    pairs: dict[tuple[str | None, str | None], Pair] = {}
    for s in touched:
        other = "app" if s.store == "ctct" else "ctct"
        partner_id = (c2a if s.store == "ctct" else a2c).get(s.store_id)
        partners = partners_app if s.store == "ctct" else partners_ctct
        partner = partners.get(partner_id) if partner_id else None
        linked = partner is not None
        live = free.get((other, s.email))
        if partner is None or (partner.deleted and live is not None and not s.deleted):
            # Unpaired, or the partner was deleted and the address lives on in another
            # contact of that store: pair with that one (a new link replaces the old).
            partner, linked = live, False
        c, a = (s, partner) if s.store == "ctct" else (partner, s)
        key = (c.store_id if c else None, a.store_id if a else None)
        if key not in pairs:
            pairs[key] = Pair(email=s.email, ctct=c, app=a, linked=linked)
    return list(pairs.values())


_OTHER: Final = {"ctct": "app", "app": "ctct"}
_ANY_CREATED: Final = "SELECT 1 FROM p_created LIMIT 1"
_CREATED_HERE: Final = "SELECT email, source_id FROM p_created WHERE store = ? AND email IN"
_CREATED_FROM: Final = "SELECT source_id, email FROM p_created WHERE store = ? AND source_id IN"


async def _made_partners(
    conn: aiosqlite.Connection, lone: list[ContactState]
) -> dict[tuple[str, str], ContactState]:
    """Partners by creation, for unpaired contacts no contact of the other store shares an
    address with: a contact ccsync created in a store that did not say its id (p_created) and
    the one it was made from. Either may have changed its address before a listing showed the
    new one, and neither is then anyone else's partner. Keyed as ``free`` is: (the partner's
    store, the lone contact's address)."""
    if not lone or not await conn.execute_fetchall(_ANY_CREATED, ()):
        return {}
    # For each store: the lone contacts whose partner there is known by its id, or its address
    by_id: dict[str, list[tuple[ContactState, str]]] = {"ctct": [], "app": []}
    by_address: dict[str, list[tuple[ContactState, str]]] = {"ctct": [], "app": []}
    for store, other in _OTHER.items():
        mine = [s for s in lone if s.store == store]
        if not mine:
            continue
        # Made here, from a contact of the other store ...
        emails = {s.email: s for s in mine}
        for email, source in await fetch_in(conn, _CREATED_HERE, list(emails), (store,)):
            by_id[other].append((emails[email], source))
        # ... or made in the other store from one of these.
        ids = {s.store_id: s for s in mine}
        for source, email in await fetch_in(conn, _CREATED_FROM, list(ids), (other,)):
            by_address[other].append((ids[source], email))
    partners: list[tuple[ContactState, ContactState]] = []
    for store in _OTHER:
        known = await load_contacts(conn, store, [i for _, i in by_id[store]])
        partners += [(s, known[i]) for s, i in by_id[store] if i in known]
        addresses = sorted({e for _, e in by_address[store]})
        live = {c.email: c for c in await _by_email(conn, addresses, store) if not c.deleted}
        partners += [(s, live[e]) for s, e in by_address[store] if e in live]
    c_ids = [p.store_id for _, p in partners if p.store == "ctct"]
    a_ids = [p.store_id for _, p in partners if p.store == "app"]
    paired = {*await _links(conn, "ctct_id", c_ids), *await _links(conn, "app_id", a_ids)}
    return {
        (p.store, s.email): p for s, p in partners if not p.deleted and p.store_id not in paired
    }


async def app_links(conn: aiosqlite.Connection, ctct_ids: list[str]) -> dict[str, str]:
    """The recorded pair (the app contact's key) of each of ``ctct_ids`` that has one, whether
    that app contact lives or not."""
    return await _links(conn, "ctct_id", ctct_ids)


async def app_partners(conn: aiosqlite.Connection, contacts: Mapping[str, str]) -> dict[str, str]:
    """The live app contact (its key) of each Constant Contact contact in ``contacts`` (id ->
    address): its recorded partner, unless the app deleted it (one ccsync created and has not
    observed yet is live), or, where it has none, the live app contact holding its address. A
    contact whose partner is deleted, or who has none, is absent."""
    linked = await _links(conn, "ctct_id", list(contacts))
    states = await load_contacts(conn, "app", set(linked.values()))
    out = {c: a for c, a in linked.items() if a not in states or not states[a].deleted}
    unlinked = {c: e for c, e in contacts.items() if c not in linked}
    if unlinked:
        holding = await _by_email(conn, sorted(set(unlinked.values())), "app")
        live = {s.email: s.store_id for s in holding if not s.deleted}
        out |= {c: live[e] for c, e in unlinked.items() if e in live}
    return out


async def pairs_for_emails(conn: aiosqlite.Connection, emails: list[str]) -> list[Pair]:
    """Pairs for every contact holding one of ``emails`` (in either store)."""
    return await _pairs_for(conn, await _by_email(conn, emails))


async def touched_pairs(conn: aiosqlite.Connection, since: int | None) -> AsyncIterator[list[Pair]]:
    """Pairs, in chunks, for contacts whose projected state moved after position ``since``
    (every contact when ``since`` is None: the full compare)."""
    # Keyset pagination on position (unique per row: each event belongs to one contact, and a
    # row's position is its last event's), so each chunk is an index range, never a rescan.
    last = since or 0
    while True:
        rows = list(
            await conn.execute_fetchall(
                "SELECT position, state FROM p_contacts WHERE position > ? "
                "ORDER BY position LIMIT ?",
                (last, _CHUNK),
            )
        )
        if not rows:
            break
        last = rows[-1][0]
        yield await _pairs_for(conn, [decode_contact(r[1]) for r in rows])
