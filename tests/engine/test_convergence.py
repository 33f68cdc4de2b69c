"""Property tests: random changes on both sides, interleaved with cycles and store failures.

After one cycle with both stores healthy, they agree under the policy and one more cycle issues
zero commands (ccsync's own writes never call for more), and no sequence ever led the engine to
add an opted-out contact to a list (the engine has no command that subscribes anyone at all). A
cycle may have some of its commands fail (a remote error), one store fail fatally at every
write (a spent quota), or one store's listing fail after a page (its server out of reach): the
engine then stops writing to that store for the cycle and fails it, and later cycles still
converge. Decisions go out a few at a time (small chunks and batches), so one cycle sends
several batches.

Each property runs twice: with the engine's clock far in the future (every backoff has passed
at every cycle, so every cycle converges what it can), and with a clock one second further at
each cycle, as back-to-back runs see it (a command applied or failed in one cycle is within its
backoff in the next). The second is how a write the store lost must be made again at once,
not after the backoff: only a failed command may wait.

Each example also draws whether Constant Contact's creates say the new contact's id (its bulk
import does not), and at the end no person may have two live contacts in one store: the fakes
know which contact each create was made from, whatever the engine believes.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import engine.cycle as cycle_module
import engine.pairs as pairs_module
from engine.cycle import CycleSummary, SyncEngine
from engine.errors import FatalError, RetriableError
from engine.log import EventLog
from engine.model import ContactRecord
from engine.outbox import BACKOFF_MAX
from engine.policy import ListLink, Policy
from tests.engine.fakes import FakeStore

EMAILS = [f"p{i}@example.org" for i in range(5)]
FRESH = [f"renamed{i}@example.org" for i in range(10)]
LISTS = {"ctct": ["c-a", "c-b"], "app": ["a-a", "a-b"]}
POLICY = Policy(
    field_sources={"job_title": "ctct"},
    lists=(
        ListLink(ctct="c-a", app="a-a", source="app"),
        ListLink(ctct="c-b", app="a-b", source="ctct"),
    ),
    delete_ctct_to_app=True,
)

# Five contacts in both stores, paired by a first cycle: a start from which most operations
# act on someone (from an empty start, half the examples end with nobody opted out).
SYNCED_START: list[tuple[object, ...]] = [
    *(("add", store, i, "Ann") for store in ("ctct", "app") for i in range(len(EMAILS))),
    ("cycle", 0),
]

store_st = st.sampled_from(["ctct", "app"])
idx_st = st.integers(0, len(EMAILS) - 1)
op_st = st.one_of(
    st.tuples(st.just("add"), store_st, idx_st, st.sampled_from(["Ann", "Bob", "Cy"])),
    st.tuples(
        st.just("edit"),
        store_st,
        idx_st,
        st.sampled_from(["first_name", "job_title", "last_name"]),
        st.sampled_from(["X", "Y"]),
    ),
    st.tuples(st.just("opt_out"), store_st, idx_st),
    st.tuples(st.just("opt_in"), store_st, idx_st),
    st.tuples(st.just("join"), store_st, idx_st, st.integers(0, 1)),
    st.tuples(st.just("leave"), store_st, idx_st, st.integers(0, 1)),
    st.tuples(st.just("delete"), store_st, idx_st),
    st.tuples(st.just("rename"), store_st, idx_st),
    # (a cycle: how many commands fail remotely, and which store, if any, fails fatally)
    st.tuples(st.just("cycle"), st.integers(0, 2), st.sampled_from([None, None, "ctct", "app"])),
    # (a healthy cycle, then one more, which must have nothing to do)
    st.tuples(st.just("settle")),
    # (a cycle in which a store's listing fails after its first page: its server is down)
    st.tuples(st.just("outage"), store_st),
)


def _alive(store: FakeStore, email: str) -> ContactRecord | None:
    rec = store.by_email(email)
    return rec if rec is not None and not rec.deleted else None


def _find(store: FakeStore, slots: dict[str, int], i: int) -> ContactRecord | None:
    """The live contact in slot ``i``: added with EMAILS[i], possibly renamed since."""
    for sid, slot in slots.items():
        rec = store.contacts.get(sid)
        if slot == i and rec is not None and not rec.deleted:
            return rec
    rec = store.by_email(EMAILS[i])
    return rec if rec is not None and not rec.deleted else None


def apply_op(
    op: tuple[object, ...],
    stores: dict[str, FakeStore],
    fresh: list[str],
    slots: dict[str, dict[str, int]],
) -> None:
    kind = op[0]
    if kind in ("cycle", "settle", "outage"):
        return
    store = stores[op[1]]  # type: ignore[index]
    i = op[2]
    assert isinstance(i, int)
    store_slots = slots.setdefault(store.store, {})
    rec = _find(store, store_slots, i)
    if kind == "add":
        if rec is None and store.by_email(EMAILS[i]) is None:
            store_slots[store.add(EMAILS[i], first_name=str(op[3]))] = i
        return
    if rec is None:
        return
    sid = rec.store_id
    match kind:
        case "edit":
            store.edit(sid, **{str(op[3]): str(op[4])})
        case "opt_out":
            store.opt_out(sid)
        case "opt_in":
            store.opt_in(sid, source="Contact" if store.store == "ctct" else "Account")
        case "join":
            store.join(sid, LISTS[store.store][op[3]])  # type: ignore[index]
        case "leave":
            store.leave(sid, LISTS[store.store][op[3]])  # type: ignore[index]
        case "delete":
            store.delete(sid)
        case "rename":
            if fresh:
                store_slots[sid] = i
                store.set_email(sid, fresh.pop())


def _pairs(
    ctct: FakeStore, app: FakeStore, links: dict[str, str]
) -> list[tuple[ContactRecord | None, ContactRecord | None]]:
    """Who is who across the stores: the engine's recorded pairs (identity survives renames),
    then the rest by email, as the documented identity rule says."""
    out: list[tuple[ContactRecord | None, ContactRecord | None]] = []
    seen_c, seen_a = set(links), set(links.values())
    out += [(ctct.contacts[c], app.contacts[a]) for c, a in links.items()]
    rest_a = {r.email: r for r in app.contacts.values() if r.store_id not in seen_a}
    for r in ctct.contacts.values():
        if r.store_id not in seen_c:
            out.append((r, rest_a.pop(r.email, None)))
    out += [(None, r) for r in rest_a.values()]
    return out


def check_agreement(
    ctct: FakeStore, app: FakeStore, links: dict[str, str], waiting: frozenset[str] = frozenset()
) -> None:
    """The stores agree under the policy, except on the contacts ``waiting`` names (by email,
    or as ``store:id``: a failed command of theirs waits out its backoff)."""
    for c, a in _pairs(ctct, app, links):
        if waiting & _names(c, a):
            continue
        c_alive = c if c is not None and not c.deleted else None
        a_alive = a if a is not None and not a.deleted else None
        who = (c or a).email  # type: ignore[union-attr]
        if c_alive and a_alive:
            assert c_alive.email == a_alive.email, who
            for f in POLICY.fields:
                assert c_alive.fields.get(f) == a_alive.fields.get(f), (who, f)
            unsub = "unsubscribed" in (c_alive.permission.status, a_alive.permission.status)
            for link in POLICY.lists:
                in_c, in_a = link.ctct in c_alive.lists, link.app in a_alive.lists
                # (an opted-out contact's memberships are left as they are, both ways)
                assert in_c == in_a or unsub, (who, link)
        cu = c is not None and c.permission.status == "unsubscribed"
        au = a is not None and a.permission.status == "unsubscribed"
        if cu and a_alive:
            assert au, f"{who}: opted out in ctct but not in app"
        if au and c_alive and not cu:
            # Only the contact's own later opt-in through Constant Contact may stand.
            assert c_alive.permission.source == "Contact", f"{who}: app opt-out not propagated"
        if a_alive and c is None:
            assert au, f"{who}: subscribed app contact never created in ctct"
        if c_alive and a is None:
            raise AssertionError(f"{who}: ctct contact never created in app")


def _people(ctct: FakeStore, app: FakeStore) -> tuple[dict[str, str], frozenset[str]]:
    """Who is the same person, as the fakes know it (whatever the engine believes): each
    contact (``store:id``) and its person (a contact ccsync created is the person it was made
    from); and the contacts of the people ccsync cannot pair.

    Those are people whose contact ccsync created in a store that does not say the new
    contact's id (Constant Contact's bulk import), renamed there before a listing showed it.
    ccsync pairs such a contact by the address it made it under, which it no longer holds, so
    it takes the renamed contact for someone new and leaves the one it was made from unpaired
    (README, "Identity")."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.get(name, name) != name:
            name = parent[name]
        return name

    for store, other in ((ctct, app), (app, ctct)):
        for sid, source in store.made_from.items():
            if source is not None:
                parent[root(f"{store.store}:{sid}")] = root(f"{other.store}:{source}")
    person = {
        f"{s.store}:{sid}": root(f"{s.store}:{sid}") for s in (ctct, app) for sid in s.contacts
    }
    lost = {
        person[f"{s.store}:{sid}"]
        for s in (ctct, app)
        if not s.reports_ids
        for sid in s.renamed_unseen
    }
    return person, frozenset(name for name, p in person.items() if p in lost)


def check_one_contact_per_person(ctct: FakeStore, app: FakeStore) -> None:
    """No person has two live contacts in one store (a duplicate), but those ccsync cannot
    pair (``_people``)."""
    person, unpairable = _people(ctct, app)
    live: dict[tuple[str, str], list[str]] = {}
    for store in (ctct, app):
        for r in store.contacts.values():
            name = f"{store.store}:{r.store_id}"
            if not r.deleted and name not in unpairable:
                live.setdefault((store.store, person[name]), []).append(r.email)
    duplicates = {k: v for k, v in live.items() if len(v) > 1}
    assert not duplicates, f"one person, several live contacts in a store: {duplicates}"


@contextlib.contextmanager
def small_batches() -> Iterator[None]:
    """Pairs decided one contact at a time, sent two commands at a time."""
    saved = cycle_module.FLUSH_AT, pairs_module._CHUNK
    cycle_module.FLUSH_AT, pairs_module._CHUNK = 2, 1  # type: ignore[misc]
    try:
        yield
    finally:
        cycle_module.FLUSH_AT, pairs_module._CHUNK = saved  # type: ignore[misc]


async def cycle(engine: SyncEngine, stores: dict[str, FakeStore], op: tuple[object, ...]) -> None:
    """One cycle with the failures ``op`` asks for."""
    for store in stores.values():
        store.fail_next = int(op[1])  # type: ignore[call-overload]
    down = stores[str(op[2])] if len(op) > 2 and op[2] is not None else None
    if down is None:
        await engine.cycle()
        return
    down.fatal, down.fatal_calls = "daily budget spent", 0
    error = None
    try:
        await engine.cycle()
    except FatalError as exc:  # (none when the cycle had nothing to write there)
        error = str(exc)
    finally:
        down.fatal = None
    assert error == ("daily budget spent" if down.fatal_calls else None)
    assert down.fatal_calls <= 1  # not written again once it failed fatally
    ctct, app = stores["ctct"], stores["app"]
    if down is ctct and not op[1]:
        # The app's writes all succeeded: it has every opt-out, but those of a failed command
        # still waiting out its backoff (none when the clock is far ahead).
        waiting = await _waiting(engine.log, "app")
        for c, a in _pairs(ctct, app, await _links(engine.log)):
            if c and a and not c.deleted and not a.deleted and not _names(c, a) & waiting:
                unsubscribed = c.permission.status == "unsubscribed"
                assert not unsubscribed or a.permission.status == "unsubscribed", c.email


async def outage(engine: SyncEngine, down: FakeStore) -> None:
    """A cycle in which ``down``'s listing gives one page and then fails: the cycle fails
    with its error, and that store is not written (the other store is)."""
    writes = len(down.writes)
    down.listing_fails_after = 1
    try:
        with pytest.raises(RetriableError, match="connection refused"):
            await engine.cycle()
    finally:
        down.listing_fails_after = None
    assert len(down.writes) == writes


class SteppedClock:
    """The engine's and the log's clock, one second further at each cycle: back-to-back runs,
    so a command applied or failed in one cycle is within its backoff in the next."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _names(c: ContactRecord | None, a: ContactRecord | None) -> set[str]:
    """A pair's emails, and its contacts as ``store:id``."""
    return {
        name
        for store, r in (("ctct", c), ("app", a))
        if r is not None
        for name in (r.email, f"{store}:{r.store_id}")
    }


async def _waiting(log: EventLog, target: str | None = None) -> frozenset[str]:
    """The contacts of the failed commands (to ``target``), each waiting out its backoff: by
    the email the command names, and, as ``store:id``, the contacts projected with that email
    (the stores may have renamed them since)."""
    rows = await log.connection.execute_fetchall(
        "SELECT m.email, p.store || ':' || p.store_id FROM p_commands m "
        "LEFT JOIN p_contacts p ON p.email = m.email "
        "WHERE m.status = 'failed' AND m.target = coalesce(?, m.target)",
        (target,),
    )
    return frozenset(name for row in rows for name in row if name is not None)


async def _links(log: EventLog) -> dict[str, str]:
    return dict(await log.connection.execute_fetchall("SELECT ctct_id, app_id FROM p_links"))  # type: ignore[arg-type]


async def scenario(
    ops: list[tuple[object, ...]], root: Path, stepped: bool = False, ctct_ids: bool = True
) -> None:
    """Run ``ops``; then the stores must agree. With ``stepped``, the clock moves one second a
    cycle (the ``SteppedClock``), so nothing waits for long except by backoff: once both stores
    are healthy, one cycle must bring every contact without a failed command into agreement,
    and the rest must follow once their backoff has passed. Without it, the clock is far in
    the future, so every backoff has passed at every cycle."""
    ctct = FakeStore("ctct", page_size=3, reports_ids=ctct_ids)
    app = FakeStore("app", page_size=3)
    stores = {"ctct": ctct, "app": app}
    fresh = list(FRESH)
    slots: dict[str, dict[str, int]] = {}
    clock = SteppedClock()
    async with await EventLog.open(root / "log.db", clock=clock if stepped else None) as log:
        engine = SyncEngine(
            log,
            ctct,
            app,
            POLICY,
            clock=clock if stepped else lambda: ctct.now.replace(year=2100),
        )
        real_cycle = engine.cycle

        async def stepping_cycle(*args: Any, **kwargs: Any) -> CycleSummary:
            clock.now += timedelta(seconds=1)
            return await real_cycle(*args, **kwargs)

        engine.cycle = stepping_cycle  # type: ignore[method-assign]
        for op in ops:
            if op[0] == "cycle":
                await cycle(engine, stores, op)
            elif op[0] == "outage":
                await outage(engine, stores[str(op[1])])
            elif op[0] == "settle":
                await cycle(engine, stores, ("cycle", 0, None))
                # With no outside change since a healthy cycle, the next has nothing to do:
                # ccsync's own writes never call for more. (A failed command still waiting
                # out its backoff may be decided again once the store's state has moved, by
                # ccsync's own writes too: a new decision, sent.)
                if not stepped or not await _waiting(log):
                    assert (await engine.cycle()).commands == {}
            else:
                apply_op(op, stores, fresh, slots)
        if stepped:
            await cycle(engine, stores, ("cycle", 0, None))
            skip = await _waiting(log) | _people(ctct, app)[1]
            check_agreement(ctct, app, await _links(log), skip)
            clock.now += BACKOFF_MAX + timedelta(minutes=1)
        # Constant Contact's quota spent: the app still gets every opt-out (checked in cycle)
        await cycle(engine, stores, ("cycle", 0, "ctct"))
        if stepped:  # (what the quota left failed is due again)
            clock.now += BACKOFF_MAX + timedelta(minutes=1)
        await cycle(engine, stores, ("cycle", 0, None))
        check_agreement(ctct, app, await _links(log), _people(ctct, app)[1])
        check_one_contact_per_person(ctct, app)
        last = await engine.cycle()
        assert last.commands == {}, last.commands
        assert ctct.violations == []
        assert app.violations == []


def run(
    ops: list[tuple[object, ...]], synced: bool, stepped: bool = False, ctct_ids: bool = True
) -> None:
    """``scenario`` in a folder of its own, from the synced start or from empty stores; with
    ``ctct_ids`` false, Constant Contact's creates do not say the new contact's id, as its
    bulk import does not (ccsync then pairs them when a listing shows them)."""
    start = SYNCED_START if synced else []
    with tempfile.TemporaryDirectory() as tmp, small_batches():
        asyncio.run(scenario([*start, *ops], Path(tmp), stepped, ctct_ids))


# Constant Contact's quota runs out at its first write (a field the app owns, set back), while
# the app's unsubscribes for three contacts opted out in Constant Contact wait in later batches.
QUOTA_BEFORE_OPT_OUTS: list[tuple[object, ...]] = [
    *[("add", "ctct", i, "Ann") for i in range(5)],
    ("cycle", 0, None),
    ("cycle", 0, None),
    ("edit", "ctct", 0, "first_name", "X"),
    ("edit", "ctct", 1, "first_name", "X"),
    *[("opt_out", "ctct", i) for i in range(2, 5)],
]


# A contact opted out in Constant Contact but still on a list the app is the source of record
# for: ccsync creates it in the app without the list (consent), and must not then strip the
# list in Constant Contact to match the absence it made itself.
OPTED_OUT_ON_A_LIST: list[tuple[object, ...]] = [
    ("add", "ctct", 0, "Ann"),
    ("join", "ctct", 0, 0),
    ("opt_out", "ctct", 0),
    ("settle",),
]


# ccsync creates a contact in the app, and a CRM user corrects its address before a cycle sees
# it: the app's create said the new contact's id, so it is the same person, not a new one.
RENAMED_BEFORE_SEEN: list[tuple[object, ...]] = [
    ("add", "ctct", 0, "Ann"),
    ("cycle", 0, None),
    ("rename", "app", 0),
]

# ccsync creates a contact in Constant Contact, whose import does not say the new id, and a
# CRM user corrects the app contact's address before a cycle lists the new one: the listing
# pairs it by the address it was made under, not as someone new.
CORRECTED_BEFORE_LISTED: list[tuple[object, ...]] = [
    ("add", "app", 0, "Ann"),
    ("cycle", 0, None),
    ("rename", "app", 0),
]

# As above, with the rename after a listing paired them (by address), in Constant Contact: it
# reaches the app.
CREATED_WITHOUT_AN_ID: list[tuple[object, ...]] = [
    ("add", "app", 0, "Ann"),
    ("cycle", 0, None),
    ("cycle", 0, None),
    ("rename", "ctct", 0),
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=25), synced=st.booleans(), ctct_ids=st.booleans())
@example(ops=QUOTA_BEFORE_OPT_OUTS, synced=False, ctct_ids=True)
@example(ops=OPTED_OUT_ON_A_LIST, synced=False, ctct_ids=True)
@example(ops=RENAMED_BEFORE_SEEN, synced=False, ctct_ids=True)
@example(ops=CREATED_WITHOUT_AN_ID, synced=False, ctct_ids=False)
@example(ops=CORRECTED_BEFORE_LISTED, synced=False, ctct_ids=False)
def test_random_changes_converge_and_never_violate_consent(
    ops: list[tuple[object, ...]], synced: bool, ctct_ids: bool
) -> None:
    run(ops, synced, ctct_ids=ctct_ids)


# A contact leaves a list the app owns, in Constant Contact; ccsync puts her back, and she
# leaves again before the next cycle: that cycle must put her back again, not wait.
UNDONE_BEFORE_SEEN: list[tuple[object, ...]] = [
    ("leave", "ctct", 0, 0),
    ("cycle", 0, None),
    ("leave", "ctct", 0, 0),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=25), synced=st.booleans(), ctct_ids=st.booleans())
@example(
    ops=[("join", "app", 0, 0), ("cycle", 0, None), *UNDONE_BEFORE_SEEN], synced=True, ctct_ids=True
)
@example(ops=QUOTA_BEFORE_OPT_OUTS, synced=False, ctct_ids=True)
@example(ops=CORRECTED_BEFORE_LISTED, synced=False, ctct_ids=False)
def test_random_changes_converge_on_a_clock_that_leaves_backoffs_running(
    ops: list[tuple[object, ...]], synced: bool, ctct_ids: bool
) -> None:
    run(ops, synced, stepped=True, ctct_ids=ctct_ids)
