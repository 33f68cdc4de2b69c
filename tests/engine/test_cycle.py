"""The sync cycle end to end on in-memory stores: get, compare, update, and converge."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

import engine.cycle as cycle_module
import engine.pairs as pairs_module
from engine.audit import (
    UnpropagatedWatch,
    audit_optouts,
    contact_history,
    find_violations,
    held_tracking,
)
from engine.commands import Command, Outcome, RecordTracking
from engine.cycle import SyncEngine
from engine.errors import ConfigError, FatalError, QuotaExhaustedError
from engine.events import CommandIssued
from engine.log import EventLog
from engine.model import TrackingActivity
from engine.policy import ListLink, Policy
from engine.ports import TrackingPage
from engine.settings import load_settings
from engine.status import read_status
from tests.engine.fakes import FakeStore

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    lg = await EventLog.open(tmp_path / "log.db")
    yield lg
    await lg.close()


async def commands_of(log: EventLog, kind: str, columns: str) -> list[tuple[Any, ...]]:
    """``columns`` of the commands of ``kind``, in the order they were issued."""
    rows = await log.connection.execute_fetchall(
        f"SELECT {columns} FROM p_commands WHERE kind = ? ORDER BY issued_position", (kind,)
    )
    return [tuple(r) for r in rows]


async def ann_in_both(log: EventLog) -> tuple[SyncEngine, FakeStore, FakeStore, str, str]:
    """``make``, with Ann in both stores, paired by a first cycle: her id in each."""
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org", first_name="Ann")
    a = app.add("ann@example.org", first_name="Ann")
    await engine.cycle()
    return engine, ctct, app, c, a


def make(log: EventLog, **policy: object) -> tuple[SyncEngine, FakeStore, FakeStore]:
    ctct, app = FakeStore("ctct"), FakeStore("app")
    pol = Policy(lists=(ListLink(ctct="c-news", app="a-news", source="app"),), **policy)  # type: ignore[arg-type]
    return SyncEngine(log, ctct, app, pol), ctct, app


async def test_initial_sync_creates_each_side_in_the_other_and_second_cycle_is_silent(
    log: EventLog,
) -> None:
    engine, ctct, app = make(log)
    ctct.add("ann@example.org", first_name="Ann")
    app.add("bob@example.org", first_name="Bob", lists=["a-news"])
    first = await engine.cycle()
    assert first.applied == 2 and first.failed == 0
    assert app.by_email("ann@example.org") is not None
    bob = ctct.by_email("bob@example.org")
    assert bob is not None and bob.fields == {"first_name": "Bob"} and bob.lists == ("c-news",)
    await engine.cycle()  # observes what the first cycle wrote
    third = await engine.cycle()
    assert third.commands == {} and third.applied == 0


async def test_opt_out_in_ctct_reaches_the_app_and_is_never_undone(log: EventLog) -> None:
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org", first_name="Ann")
    a = app.add("ann@example.org", first_name="Ann")
    await engine.cycle()
    ctct.opt_out(c, reason="too many emails")
    await engine.cycle()
    assert app.contacts[a].permission.status == "unsubscribed"
    assert app.contacts[a].permission.reason == "too many emails"
    # The app's user re-subscribes her by hand: opt-out wins, and the attempt is recorded.
    app.opt_in(a, source="Account")
    s = await engine.cycle()
    assert s.blocked == 1
    assert app.contacts[a].permission.status == "unsubscribed"
    assert ctct.contacts[c].permission.status == "unsubscribed"
    rows = await log.connection.execute_fetchall("SELECT action, email FROM p_decisions")
    assert [tuple(r) for r in rows] == [("resubscribe", "ann@example.org")]


async def test_opt_out_in_app_reaches_ctct_and_blocks_list_adds(log: EventLog) -> None:
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org")
    a = app.add("ann@example.org")
    await engine.cycle()
    app.opt_out(a)
    app.join(a, "a-news")
    await engine.cycle()
    await engine.cycle()
    assert ctct.contacts[c].permission.status == "unsubscribed"
    assert "c-news" not in ctct.contacts[c].lists
    assert ctct.violations == [] and app.violations == []


async def test_an_opted_out_contacts_lists_are_left_alone_after_the_initial_sync(
    log: EventLog,
) -> None:
    # Unsubscribed in Constant Contact but still on c-news, whose source of record is the app:
    # created in the app without the list (consent), she keeps c-news in Constant Contact, and
    # the cycle after the initial sync has nothing to do.
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org", lists=["c-news"])
    ctct.opt_out(c)
    first = await engine.cycle()
    assert first.commands == {"contact.upsert": 1, "contact.unsubscribe": 1}
    ann = app.by_email("ann@example.org")
    assert ann is not None and ann.lists == () and ann.permission.status == "unsubscribed"
    second = await engine.cycle()  # observes the app's new contact
    assert second.commands == {} and second.blocked == 1
    assert ctct.contacts[c].lists == ("c-news",)
    rows = await log.connection.execute_fetchall("SELECT store_key, action FROM p_decisions")
    assert [tuple(r) for r in rows] == [(f"ctct:{c}", "remove from list c-news")]
    assert (await engine.cycle()).commands == {}


async def test_an_import_list_that_is_mapped_is_refused_before_anything_is_written(
    log: EventLog,
) -> None:
    # Every contact created in Constant Contact with no mapped list joins the import list; were
    # it c-news (the app's a-news decides), the next cycle would take each off it again.
    ctct, app = FakeStore("ctct"), FakeStore("app")
    policy = Policy(lists=(ListLink(ctct="c-news", app="a-news", source="app"),))
    engine = SyncEngine(log, ctct, app, policy, ctct_import_list="c-news")
    app.add("bob@example.org", first_name="Bob")
    with pytest.raises(ConfigError) as err:
        await engine.cycle()
    assert err.value.key == "ctct.import_list_id"
    assert "'c-news'" in str(err.value) and "'a-news'" in str(err.value)
    assert ctct.by_email("bob@example.org") is None
    rows = await log.connection.execute_fetchall("SELECT outcome, error FROM p_runs")
    assert [tuple(r) for r in rows] == [("failed", str(err.value))]
    # A list of its own is fine.
    engine = SyncEngine(log, ctct, app, policy, ctct_import_list="c-imported")
    assert (await engine.cycle()).commands == {"contact.upsert": 1}


async def test_contacts_own_resubscribe_in_ctct_is_respected_but_not_copied(log: EventLog) -> None:
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org")
    a = app.add("ann@example.org")
    await engine.cycle()
    app.opt_out(a)
    await engine.cycle()
    assert ctct.contacts[c].permission.status == "unsubscribed"
    ctct.opt_in(c, source="Contact")  # she confirmed a re-subscribe email herself
    s = await engine.cycle()
    assert ctct.contacts[c].permission.status == "explicit"
    assert app.contacts[a].permission.status == "unsubscribed"
    assert s.blocked == 1 and "contact.unsubscribe" not in s.commands


async def test_source_of_record_wins_for_profile_fields_and_email_changes_keep_the_pair(
    log: EventLog,
) -> None:
    engine, ctct, app = make(log, field_sources={"job_title": "ctct"})
    c = ctct.add("ann@example.org", first_name="Ann", job_title="CTO")
    a = app.add("ann@example.org", first_name="Annie")
    await engine.cycle()
    await engine.cycle()
    assert ctct.contacts[c].fields["first_name"] == "Annie"  # app is the source of record
    assert app.contacts[a].fields["job_title"] == "CTO"  # override: ctct owns job_title
    app.set_email(a, "ann.new@example.org")
    await engine.cycle()
    assert ctct.contacts[c].email == "ann.new@example.org"  # same contact id, renamed
    assert len(ctct.contacts) == 1
    await engine.cycle()
    assert (await engine.cycle()).commands == {}
    rows = await log.connection.execute_fetchall("SELECT store, email FROM p_contacts")
    assert sorted(tuple(r) for r in rows) == [
        ("app", "ann.new@example.org"),
        ("ctct", "ann.new@example.org"),
    ]
    # Her old address, taken by someone new in Constant Contact, is a new person in the app.
    ctct.add("ann@example.org", first_name="Other")
    await engine.cycle()
    assert app.contacts[a].fields["first_name"] == "Annie"
    other = app.by_email("ann@example.org")
    assert other is not None and other.store_id != a and other.fields["first_name"] == "Other"


async def test_failed_commands_are_recorded_and_retried_later(log: EventLog) -> None:
    engine, ctct, app = make(log)
    app.add("bob@example.org", first_name="Bob")
    ctct.fail_next = 1
    s = await engine.cycle()
    assert s.failed == 1 and ctct.by_email("bob@example.org") is None
    rows = await log.connection.execute_fetchall("SELECT status, error FROM p_commands")
    assert [tuple(r) for r in rows] == [("failed", "503 service unavailable")]
    engine.clock = lambda: ctct.now.replace(year=2030)  # past the backoff
    s2 = await engine.cycle()
    assert s2.applied == 1 and ctct.by_email("bob@example.org") is not None


async def test_a_write_undone_before_any_cycle_saw_it_is_made_again_without_waiting(
    log: EventLog,
) -> None:
    """An applied command decided again on the same observed state waits out its backoff
    (the store may not show it yet). A listing that shows the store modified the contact
    since is a new observed state, so the decision is a new command, sent at once: the store
    took the write and lost it, and waiting would only leave the stores apart."""
    engine, ctct, app = make(log)  # the app is the newsletter's source of record
    c = ctct.add("ann@example.org", first_name="Ann")
    app.add("ann@example.org", first_name="Ann", lists=["a-news"])
    await engine.cycle()
    await engine.cycle()
    ctct.leave(c, "c-news")
    first = await engine.cycle()
    assert first.commands == {"membership.add": 1} and ctct.contacts[c].lists == ("c-news",)
    ctct.leave(c, "c-news")  # again, before any cycle has seen her back on it
    again = await engine.cycle()  # (the same command, applied seconds ago)
    assert again.commands == {"membership.add": 1}
    assert ctct.contacts[c].lists == ("c-news",)
    lines = [h.summary for h in await contact_history(log, "ann@example.org")]
    assert "modified in the store; no synced field differs" in lines
    # The first add is not "confirmed by observation": observation showed her off the list.
    # It is superseded by the second, and keeps the time the store took it.
    adds = await commands_of(log, "membership.add", "command_id, status, outcome_at")
    # (The first of three put her on the list in the first cycle, and was confirmed.)
    assert [status for _, status, _ in adds] == ["confirmed", "superseded", "applied"]
    assert adds[1][2] is not None
    first_id, second_id = adds[1][0], adds[2][0]
    assert f"command {first_id[:12]} confirmed by observation" not in lines
    assert (
        f"command {first_id[:12]} superseded: the store does not show it: decided again on "
        f"the contact's newer state, by command {second_id[:12]}"
    ) in lines
    await engine.cycle()  # observes her back on the list
    assert (await engine.cycle()).commands == {}
    lines = [h.summary for h in await contact_history(log, "ann@example.org")]
    assert f"command {second_id[:12]} confirmed by observation" in lines


async def test_a_profile_write_undone_before_any_cycle_saw_it_is_superseded_not_confirmed(
    log: EventLog,
) -> None:
    # The app is the source of record for profiles. A CRM user's name for Ann reaches
    # Constant Contact, and someone there puts the old name back before ccsync looks again.
    engine, ctct, app, c, a = await ann_in_both(log)
    await engine.cycle()
    app.edit(a, first_name="Anne", last_name="Lee")
    assert (await engine.cycle()).commands == {"contact.upsert": 1}
    ctct.edit(c, first_name="Ann", last_name="Lee")
    assert (await engine.cycle()).commands == {"contact.upsert": 1}
    assert ctct.contacts[c].fields["first_name"] == "Anne"
    rows = await commands_of(log, "contact.upsert", "status")
    assert [status for (status,) in rows] == ["superseded", "applied"]
    await engine.cycle()
    rows = await commands_of(log, "contact.upsert", "status")
    assert [status for (status,) in rows] == ["superseded", "confirmed"]


async def test_a_create_the_store_lost_is_superseded_by_the_next_create(log: EventLog) -> None:
    # ccsync creates Ann in the app, and the app loses the record before any cycle lists it;
    # her name changes in Constant Contact meanwhile, so the next create differs.
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org", first_name="Ann")
    await engine.cycle()
    app.contacts.clear()  # (lost without a trace: never listed, not even as deleted)
    app.stamps.clear()
    ctct.edit(c, first_name="Anne")
    assert (await engine.cycle()).commands == {"contact.upsert": 1}
    (first, by), (second, _) = await commands_of(log, "contact.upsert", "status, superseded_by")
    assert (first, second) == ("superseded", "applied") and by is not None
    assert [r.fields["first_name"] for r in app.contacts.values()] == ["Anne"]


async def test_an_opt_out_the_app_lost_is_carried_by_the_successor_in_the_audit(
    log: EventLog,
) -> None:
    # Ann opts out in Constant Contact; ccsync unsubscribes her in the app, and a CRM user
    # sets her back to subscribed before ccsync looks again. Opt-out wins: ccsync writes the
    # opt-out again, and the audit shows that second command as the one that carried it.
    engine, ctct, app, c, a = await ann_in_both(log)
    ctct.opt_out(c, reason="too many emails")
    await engine.cycle()
    app.opt_in(a, source="Account")
    assert (await engine.cycle()).commands == {"contact.unsubscribe": 1}
    assert app.contacts[a].permission.status == "unsubscribed"
    rows = await commands_of(log, "contact.unsubscribe", "command_id, status, superseded_by")
    (lost, status, by), (second, *_) = rows
    assert (status, by) == ("superseded", second)
    [origin] = await audit_optouts(log, email="ann@example.org")
    assert (origin.store, origin.command_id, origin.state) == ("ctct", second, "applied")
    await engine.cycle()  # observes her unsubscribed in the app
    [origin] = await audit_optouts(log, email="ann@example.org")
    assert (origin.command_id, origin.state) == (second, "confirmed")
    assert lost != second


async def test_an_opt_out_restated_after_an_address_change_is_not_a_new_one(
    log: EventLog,
) -> None:
    """Constant Contact stamps an email address anew when the address changes: an opted-out
    contact whose address the app changed is seen unsubscribed again, with a new time. That
    is not an opt-out the app is owed (it has hers): the audit must not list it pending for
    ever, nor the violations check report it unpropagated."""
    engine, ctct, app, c, a = await ann_in_both(log)
    ctct.opt_out(c, reason="too many emails")
    await engine.cycle()
    await engine.cycle()  # her opt-out confirmed in the app
    app.set_email(a, "ann.lee@example.org")
    await engine.cycle()  # the new address reaches Constant Contact
    ctct.opt_out(c, reason="too many emails")  # restated under the new address
    await engine.cycle()
    lines = [h.summary for h in await contact_history(log, "ann.lee@example.org")]
    assert any("unsubscribed -> unsubscribed" in s for s in lines), lines
    assert (await engine.cycle()).commands == {}
    origins = await audit_optouts(log)
    assert [(o.store, o.email, o.state) for o in origins] == [
        ("ctct", "ann@example.org", "confirmed")
    ]
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert await find_violations(log, later, timedelta(hours=24)) == []


async def test_a_healthy_daemons_opt_out_is_not_late_by_its_default_bound(
    tmp_path: Path,
) -> None:
    """An opt-out made just after a cycle began is seen by the next cycle, an interval and its
    jitter later, carried in it, and confirmed by the cycle after, another interval and jitter
    on. A daemon doing its job must not be reported late by its own default bound (it was one
    interval plus 15 minutes: such an opt-out was a violation, and the alert fired)."""
    config = tmp_path / "ccsync.toml"
    config.write_text("[sync]\ninterval_seconds = 900\njitter_seconds = 60\n")
    settings = load_settings(config)
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    log = await EventLog.open(tmp_path / "log.db", clock=lambda: now)
    try:
        engine, ctct, app = make(log)
        engine.clock = lambda: now
        ctct.now = app.now = now - timedelta(hours=1)
        c = ctct.add("ann@example.org", first_name="Ann")
        app.add("ann@example.org", first_name="Ann")
        await engine.cycle()
        ctct.now = now
        ctct.opt_out(c, reason="too many emails")  # a second after the cycle began
        gap = timedelta(seconds=settings.interval_seconds + settings.jitter_seconds)
        now += gap
        assert (await engine.cycle()).commands == {"contact.unsubscribe": 1}
        now += gap + timedelta(seconds=5)  # (the observation that confirms it takes a moment)
        await engine.cycle()
        [origin] = await audit_optouts(log, email="ann@example.org")
        assert origin.state == "confirmed" and origin.latency_seconds is not None
        assert origin.latency_seconds > settings.interval_seconds + 900  # the old default
        bound = timedelta(seconds=settings.opt_out_bound_seconds)
        assert await find_violations(log, now, bound) == []
    finally:
        await log.close()


async def test_opt_outs_that_need_no_carrying_are_never_pending(log: EventLog) -> None:
    """An opt-out no command carries is owed nothing when the other store has no live contact
    with the address (deleted there: one that holds it later is decided then), or opts the
    address out itself before a cycle could carry it. Listed 'pending', each would stay so for
    ever: a violation once past the bound, and the daemon's oldest-unpropagated age growing."""
    engine, ctct, app = make(log)
    ann, bob = ctct.add("ann@example.org"), ctct.add("bob@example.org")
    app_ann, app_bob = app.add("ann@example.org"), app.add("bob@example.org")
    await engine.cycle()
    ctct.delete(ann)
    await engine.cycle()
    app.opt_out(app_ann, reason="asked")  # her Constant Contact contact is gone
    ctct.opt_out(bob, reason="too many emails")  # and Bob opts out in both stores
    app.opt_out(app_bob, reason="asked")  # between two cycles
    summary = await engine.cycle()
    assert summary.commands == {}
    states = {(o.email, o.store): o.state for o in await audit_optouts(log)}
    assert states[("ann@example.org", "app")] == "no-contact"
    assert {states[("bob@example.org", "ctct")], states[("bob@example.org", "app")]} == {"already"}
    assert await UnpropagatedWatch().oldest(log, datetime(2030, 1, 1, tzinfo=UTC)) is None
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert await find_violations(log, later, timedelta(hours=1)) == []


async def test_an_opt_out_is_recorded_as_a_permission_change_alone(log: EventLog) -> None:
    # (Her record's modified time moves with it: that is not an edit of its own.)
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org", first_name="Ann")
    app.add("ann@example.org", first_name="Ann")
    await engine.cycle()
    ctct.opt_out(c, reason="too many emails")
    await engine.cycle()
    await engine.cycle()  # observes the app's opt-out ccsync wrote
    lines = [(h.store, h.summary) for h in await contact_history(log, "ann@example.org")]
    assert not [s for _, s in lines if s.startswith("modified in the store")], lines
    changes = [store for store, s in lines if "-> unsubscribed" in s]
    assert sorted(changes) == ["app", "ctct"]


async def test_a_contact_renamed_before_ccsync_saw_its_creation_is_not_made_twice(
    log: EventLog,
) -> None:
    # ccsync creates Ann in the app; a CRM user corrects her address before the next cycle
    # has seen the new record. She is one person: no second app contact, and the new address
    # reaches Constant Contact.
    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org", first_name="Ann")
    await engine.cycle()
    [a] = app.contacts
    app.set_email(a, "ann.lee@example.org")
    await engine.cycle()
    # (Her history under her new address holds the commands decided under the old one.)
    said = f"paired Constant Contact {c} with app contact {a}"
    await one_person(engine, ctct, app, (c, a), "ann.lee@example.org", said)


async def one_person(
    engine: SyncEngine,
    ctct: FakeStore,
    app: FakeStore,
    pair: tuple[str, str],
    email: str,
    said: str,
) -> None:
    """The stores hold one person, ``pair`` (her ids), under ``email`` in both; her history
    under it has a line ending with ``said``; and once her echo is seen, nothing is to do."""
    assert [r.email for r in app.contacts.values()] == [email]
    assert [r.email for r in ctct.contacts.values()] == [email]
    links = await engine.log.connection.execute_fetchall("SELECT ctct_id, app_id FROM p_links")
    assert [tuple(r) for r in links] == [pair]
    lines = [h.summary for h in await contact_history(engine.log, email)]
    assert [s for s in lines if s.endswith(said)], lines
    await engine.cycle()
    assert (await engine.cycle()).commands == {}


async def test_a_contact_renamed_before_ccsync_saw_it_in_constant_contact_is_not_made_twice(
    log: EventLog,
) -> None:
    # Constant Contact's bulk import does not say the new contact's id. ccsync creates Bob
    # there; a CRM user corrects his address in the app before the next cycle. The listing
    # shows Bob under the address ccsync made him with: he is the one made from the app's Bob,
    # not a new person, and the corrected address reaches Constant Contact.
    engine, ctct, app = make(log)
    ctct.reports_ids = False
    a = app.add("bob@example.org", first_name="Bob", lists=["a-news"])
    await engine.cycle()
    [c] = ctct.contacts
    app.set_email(a, "bob.lee@example.org")
    await engine.cycle()
    said = (
        f"applied: created from app contact {a}; the store did not say its id: "
        "paired when a listing shows bob@example.org"
    )
    await one_person(engine, ctct, app, (c, a), "bob.lee@example.org", said)


async def test_a_history_shows_its_own_commands_from_batches_shared_with_others(
    log: EventLog,
) -> None:
    # One command.issued event carries all four creates (as a large sync's carry thousands);
    # Bob's history shows his create issued, applied and confirmed, and nobody else's.
    engine, ctct, _ = make(log)
    for name in ("ann", "bob", "cy", "dee"):
        ctct.add(f"{name}@example.org", first_name=name.title())
    await engine.cycle()
    await engine.cycle()
    issued = await commands_of(log, "contact.upsert", "email, command_id, issued_position")
    assert len(issued) == 4 and len({p for *_, p in issued}) == 1
    [bob] = [cid[:12] for email, cid, _ in issued if email == "bob@example.org"]
    lines = [h.summary for h in await contact_history(log, "bob@example.org")]
    said = [" ".join(s.split()[:3]).rstrip(":") for s in lines if s.startswith("command ")]
    assert said == [f"command {bob} issued", f"command {bob} applied", f"command {bob} confirmed"]
    assert not [s for s in lines if any(f"{n}@example.org" in s for n in ("ann", "cy", "dee"))]


async def test_deletes_propagate_only_where_configured(log: EventLog) -> None:
    engine, ctct, app = make(log, delete_ctct_to_app=True)
    c = ctct.add("ann@example.org")
    a = app.add("ann@example.org")
    b = app.add("bob@example.org")
    await engine.cycle()
    ctct.delete(c)
    app.delete(b)
    await engine.cycle()
    assert app.contacts[a].deleted
    bob = ctct.by_email("bob@example.org")
    assert bob is not None and not bob.deleted  # app -> ctct deletes are off


async def test_a_bug_while_a_store_is_listed_cancels_the_other_and_leaves_a_sound_log(
    log: EventLog,
) -> None:
    """An error that is not the store's own (here a bug in its adapter) ends the cycle at
    once: the other store's listing is cancelled, not left running to append pages to a run
    already recorded as failed."""
    from engine.logverify import verify_log
    from engine.ports import Page

    engine, ctct, app = make(log)
    app.add("bob@example.org")
    never = asyncio.Event()
    real = app.observe_contacts

    async def slow_app(resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        async for page in real(resume, bound):
            yield page
        await never.wait()  # a store that would keep the cycle busy forever

    async def broken_ctct(resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        raise KeyError("list_memberships")
        yield  # an async generator

    app.observe_contacts = slow_app  # type: ignore[method-assign]
    ctct.observe_contacts = broken_ctct  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        await engine.cycle()
    # (The end-of-cycle WAL copy may still run: it appends nothing, and closing the log waits
    # for it.)
    stray = [
        t
        for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and t.get_name() != "ccsync-wal-copy"
    ]
    assert stray == []
    report = await verify_log(log)
    assert report.ok, report.problems
    rows = await log.connection.execute_fetchall("SELECT outcome, error FROM p_runs")
    assert [r[0] for r in rows] == ["failed"]


async def six_pairs(
    engine: SyncEngine, ctct: FakeStore, app: FakeStore, *, paged: FakeStore
) -> list[tuple[str, str]]:
    """Six contacts in both stores, paired and quiet; ``paged`` lists three a page."""
    paged.page_size = 3
    emails = [f"p{i}@example.org" for i in range(6)]
    pairs = [(ctct.add(e, first_name="P"), app.add(e, first_name="P")) for e in emails]
    await engine.cycle()
    await engine.cycle()  # paired, and quiet
    return pairs


def fail_listing_after_a_page(
    monkeypatch: pytest.MonkeyPatch, store: FakeStore, error: Exception
) -> list[int]:
    """``store``'s listings raise ``error`` after their first page; returns the sizes of the
    batches it is written from now on."""
    from engine.ports import Page

    listing, writing = store.observe_contacts, store.apply
    written: list[int] = []

    async def failing(resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        async for page in listing(resume, bound):
            yield page
            raise error

    async def counted(commands: Any) -> Any:
        written.append(len(commands))
        return await writing(commands)

    monkeypatch.setattr(store, "observe_contacts", failing)
    monkeypatch.setattr(store, "apply", counted)
    return written


async def test_an_app_database_out_of_reach_mid_listing_still_has_its_opt_outs_reach_ctct(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's database stops answering after the first page of the cycle's changes (its
    adapter gave up retrying). That page's opt-outs still reach Constant Contact in the same
    cycle, nothing is written to the app, and the cycle fails with the database's error, which
    the daemon retries at the next cycle. That cycle lists the rest."""
    from engine.errors import RetriableError

    engine, ctct, app = make(log)
    pairs = await six_pairs(engine, ctct, app, paged=app)
    for _, a in pairs:
        app.opt_out(a, reason="asked by phone", source="Account")  # two pages of three
    ctct.add("new@example.org", first_name="N")  # for the app: withheld while it is down
    listing = app.observe_contacts
    error = RetriableError("app database: connection refused (after 5 attempts)")
    written = fail_listing_after_a_page(monkeypatch, app, error)
    with pytest.raises(RetriableError, match="connection refused"):
        await engine.cycle()
    status = [ctct.contacts[c].permission.status for c, _ in pairs]
    assert status == ["unsubscribed"] * 3 + ["implicit"] * 3  # the first page's three
    assert written == []
    runs = "SELECT outcome FROM p_runs ORDER BY started_position"
    assert [r[0] for r in await log.connection.execute_fetchall(runs)][-1] == "failed"
    monkeypatch.setattr(app, "observe_contacts", listing)
    await engine.cycle()
    assert [ctct.contacts[c].permission.status for c, _ in pairs] == ["unsubscribed"] * 6
    assert app.by_email("new@example.org") is not None and written != []
    assert ctct.violations == [] and app.violations == []


async def test_a_contacts_history_shows_its_own_commands_from_the_batches(log: EventLog) -> None:
    engine, ctct, app = make(log)
    ann = ctct.add("ann@example.org", first_name="Ann")
    bob = ctct.add("bob@example.org", first_name="Bob")
    app.add("ann@example.org", first_name="Ann")
    app.add("bob@example.org", first_name="Bob")
    await engine.cycle()
    ctct.opt_out(ann, reason="too many emails")
    ctct.opt_out(bob, reason="moved")
    await engine.cycle()  # both unsubscribes go to the app in one batch
    await engine.cycle()  # and are confirmed by observing the app
    lines = [(h.type, h.summary) for h in await contact_history(log, "ann@example.org")]
    commands = [(t, s) for t, s in lines if t.startswith("command.")]
    assert [t for t, _ in commands] == ["command.issued", "command.applied", "command.confirmed"]
    assert "contact.unsubscribe" in commands[0][1] and "ann@example.org" in commands[0][1]
    assert not any("bob@example.org" in s for _, s in lines)
    cid = commands[0][1].split()[1]
    assert all(s.startswith(f"command {cid} ") for _, s in commands)


async def test_a_contacts_history_shows_every_send_of_a_command_sent_again(
    log: EventLog,
) -> None:
    """A store that took a write and does not show it gets it again after the backoff: the
    person's history shows both sends, not only the last (the audit must prove when the
    opt-out first reached the app, and that it had to be sent twice)."""
    engine, ctct, app = make(log)
    ann = ctct.add("ann@example.org", first_name="Ann")
    app.add("ann@example.org", first_name="Ann")
    await engine.cycle()
    ctct.opt_out(ann, reason="too many emails")
    app.lose_next = 1
    assert (await engine.cycle()).commands == {"contact.unsubscribe": 1}  # lost
    assert (await engine.cycle()).commands == {}  # the app does not show it: within backoff
    engine.clock = lambda: ctct.now.replace(year=2030)
    assert (await engine.cycle()).commands == {"contact.unsubscribe": 1}  # sent again
    await engine.cycle()  # and confirmed by observing the app
    lines = [(h.type, h.summary) for h in await contact_history(log, "ann@example.org")]
    commands = [t for t, s in lines if t.startswith("command.")]
    assert commands == [
        "command.issued", "command.applied", "command.issued", "command.applied",
        "command.confirmed",
    ]  # fmt: skip
    [(status, attempts)] = await commands_of(log, "contact.unsubscribe", "status, attempts")
    assert (status, attempts) == ("confirmed", 2)
    rows = await log.connection.execute_fetchall("SELECT count(*) FROM p_command_sends")
    assert list(rows) == [(1,)]  # only the command sent twice has an earlier send kept


async def test_decisions_are_flushed_in_bounded_batches_even_without_commands(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairing 40 contacts that already agree issues no command, only links: they must still
    go out FLUSH_AT at a time, not all at the end (memory bound for a million-contact pairing)."""
    monkeypatch.setattr(cycle_module, "FLUSH_AT", 8)
    monkeypatch.setattr(pairs_module, "_CHUNK", 5)  # pairs are decided 5 contacts at a time
    engine, ctct, app = make(log)
    for i in range(40):
        ctct.add(f"p{i}@example.org", first_name=f"P{i}")
        app.add(f"p{i}@example.org", first_name=f"P{i}")
    sizes: list[int] = []
    issue = engine.outbox.issue

    async def spy(commands: Any, *args: Any, **kw: Any) -> Any:
        sizes.append(len(commands) + len(kw.get("extra", ())))
        return await issue(commands, *args, **kw)

    monkeypatch.setattr(engine.outbox, "issue", spy)
    s = await engine.cycle()
    assert s.commands == {}
    links = await log.connection.execute_fetchall("SELECT COUNT(*) FROM p_links")
    assert next(iter(links))[0] == 40
    assert sum(sizes) == 40 and max(sizes) < 8 + 5, sizes


async def test_both_stores_are_written_at_once(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Constant Contact's writes (activities polled to completion) do not hold up the app's:
    here Constant Contact's sink finishes only once the app's has started."""
    engine, ctct, app = make(log)
    ctct.add("from-ctct@example.org", first_name="C")
    app.add("from-app@example.org", first_name="A")
    app_started = asyncio.Event()
    ctct_apply, app_apply = ctct.apply, app.apply

    async def ctct_waits(commands: Any) -> Any:
        await asyncio.wait_for(app_started.wait(), timeout=10)  # a guard, not a clock
        return await ctct_apply(commands)

    async def app_signals(commands: Any) -> Any:
        app_started.set()
        return await app_apply(commands)

    monkeypatch.setattr(ctct, "apply", ctct_waits)
    monkeypatch.setattr(app, "apply", app_signals)
    s = await engine.cycle()
    assert s.failed == 0 and s.applied == 2, s


def thirty_in_batches_of_ten(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> tuple[SyncEngine, FakeStore]:
    """30 contacts new in Constant Contact, decided 5 at a time and sent 10 at a time (a
    batch goes out once 8 commands wait): three batches for the app."""
    monkeypatch.setattr(cycle_module, "FLUSH_AT", 8)
    monkeypatch.setattr(pairs_module, "_CHUNK", 5)
    engine, ctct, app = make(log)
    for i in range(30):
        ctct.add(f"p{i}@example.org", first_name=f"P{i}")
    return engine, app


async def test_the_next_batch_is_decided_and_issued_while_one_is_being_written(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's write of the first batch finishes only once the reconciler has gone on to
    decide later contacts and record the next batch as issued: they overlap."""
    engine, app = thirty_in_batches_of_ten(log, monkeypatch)
    second_issued = asyncio.Event()
    issued: list[int] = []
    issue = engine.outbox.issue

    async def counting(commands: Any, *args: Any, **kw: Any) -> Any:
        result = await issue(commands, *args, **kw)
        issued.append(len(result.todo))
        if len(issued) == 2:
            second_issued.set()
        return result

    app_apply = app.apply
    written: list[int] = []

    async def app_waits(commands: Any) -> Any:
        if not written:
            await asyncio.wait_for(second_issued.wait(), timeout=10)  # a guard, not a clock
        written.append(len(commands))
        return await app_apply(commands)

    monkeypatch.setattr(engine.outbox, "issue", counting)
    monkeypatch.setattr(app, "apply", app_waits)
    s = await engine.cycle()
    assert s.failed == 0 and s.applied == 30, s
    assert [n for n in issued if n] == written == [10, 10, 10]
    assert len(app.contacts) == 30


async def test_a_batchs_outcomes_are_recorded_while_the_next_batch_is_being_written(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording the first batch's outcomes finishes only once the app has started writing
    the second batch: the log's records and the store's writes overlap."""
    engine, app = thirty_in_batches_of_ten(log, monkeypatch)
    second_sent = asyncio.Event()
    sent: list[int] = []
    app_apply = app.apply

    async def app_counts(commands: Any) -> Any:
        sent.append(len(commands))
        if len(sent) == 2:
            second_sent.set()
        return await app_apply(commands)

    recorded: list[int] = []
    record = engine.outbox.record

    async def record_waits(delivered: Any, **kwargs: Any) -> Any:
        if delivered.outcomes:
            if not recorded:
                await asyncio.wait_for(second_sent.wait(), timeout=10)  # a guard, not a clock
            recorded.append(len(delivered.outcomes))
        return await record(delivered, **kwargs)

    monkeypatch.setattr(app, "apply", app_counts)
    monkeypatch.setattr(engine.outbox, "record", record_waits)
    s = await engine.cycle()
    assert s.failed == 0 and s.applied == 30, s
    assert sent == recorded == [10, 10, 10]
    rows = await log.connection.execute_fetchall(
        "SELECT status, COUNT(*) FROM p_commands GROUP BY status"
    )
    assert [tuple(r) for r in rows] == [("applied", 30)]


async def test_a_batch_that_fails_fatally_ends_the_cycle_and_the_next_is_never_sent(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch issued while the failing one was being sent is recorded as failed, not sent
    (retriable: a later cycle decides its contacts again); nothing after it is issued."""
    engine, app = thirty_in_batches_of_ten(log, monkeypatch)
    sent: list[int] = []

    async def app_fails(commands: Any) -> Any:
        sent.append(len(commands))
        raise FatalError("the app database refused the login")

    monkeypatch.setattr(app, "apply", app_fails)
    with pytest.raises(FatalError, match="refused the login"):
        await engine.cycle()
    assert sent == [10]  # the first batch (two chunks of five) and nothing after it
    rows = await log.connection.execute_fetchall(
        "SELECT error, retriable, COUNT(*) FROM p_commands GROUP BY error, retriable"
    )
    assert sorted(rows) == [  # type: ignore[type-var]
        ("not sent: an earlier batch failed: the app database refused the login", 1, 10),
        ("the app database refused the login", 0, 10),
    ]
    monkeypatch.setattr(app, "apply", FakeStore.apply.__get__(app))
    later = datetime.now(UTC) + timedelta(hours=1)  # past both batches' retry backoff
    engine.clock = lambda: later
    s = await engine.cycle()  # the app is back: every contact reaches it
    assert len(app.contacts) == 30, s


async def test_a_store_that_fails_fatally_is_left_while_the_other_still_gets_its_opt_outs(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Constant Contact's daily quota runs out at its first write of the cycle. The app still
    gets every unsubscribe the cycle decided (an opt-out seen in Constant Contact must not wait
    for its quota to come back), Constant Contact is not called again, and the cycle fails
    with the quota's error, its checkpoint unmoved: once the quota is back, the edits reach
    Constant Contact."""
    monkeypatch.setattr(cycle_module, "FLUSH_AT", 8)
    monkeypatch.setattr(pairs_module, "_CHUNK", 5)
    engine, ctct, app = make(log)
    pairs = [
        (
            ctct.add(f"p{i}@example.org", first_name="P"),
            app.add(f"p{i}@example.org", first_name="P"),
        )
        for i in range(15)
    ]
    await engine.cycle()
    await engine.cycle()  # paired, and quiet
    for i, (c, a) in enumerate(pairs):  # each contact: an unsubscribe for the app, an edit for CC
        ctct.opt_out(c, reason="too many emails")
        app.edit(a, first_name=f"Q{i}")
    calls: list[int] = []

    async def quota_spent(commands: Any) -> Any:
        calls.append(len(commands))
        raise QuotaExhaustedError("daily budget of 10000 requests spent", "2026-11-28T00:00:00Z")

    ctct_apply = ctct.apply
    monkeypatch.setattr(ctct, "apply", quota_spent)
    with pytest.raises(QuotaExhaustedError, match="daily budget"):
        await engine.cycle()
    assert len(calls) == 1  # the first batch's writes, and none after the quota ran out
    unsubscribed = [a for _, a in pairs if app.contacts[a].permission.status == "unsubscribed"]
    assert len(unsubscribed) == 15
    [run] = (await read_status(log, datetime.now(UTC), runs=1)).runs
    assert run.outcome == "failed" and run.error and "daily budget" in run.error
    # The third batch's five edits for Constant Contact were decided but not issued.
    assert run.counts is not None and run.counts["withheld"] == 5
    monkeypatch.setattr(ctct, "apply", ctct_apply)
    later = datetime.now(UTC) + timedelta(hours=1)  # past the failed commands' backoff
    engine.clock = lambda: later
    await engine.cycle()
    assert [ctct.contacts[c].fields["first_name"] for c, _ in pairs] == [f"Q{i}" for i in range(15)]
    assert ctct.violations == [] and app.violations == []


async def test_a_store_out_of_reach_from_the_start_leaves_the_other_observed_and_written(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's database does not answer at all (its lists are the first thing asked for).
    Constant Contact is still observed, so its opt-out is on record as seen this cycle, and
    the edit that the app's fields undo is written back to it; the app is not called again,
    and the cycle fails with the database's error."""
    from engine.errors import RetriableError

    engine, ctct, app = make(log)
    c = ctct.add("ann@example.org", first_name="Ann")
    b = ctct.add("bob@example.org", first_name="Bob")
    app.add("ann@example.org", first_name="Ann")
    app.add("bob@example.org", first_name="Bob")
    await engine.cycle()
    await engine.cycle()  # paired, and quiet
    ctct.opt_out(c, reason="too many emails")
    ctct.edit(b, first_name="Robert")  # the app is the source of record for names
    calls: list[str] = []

    async def unreachable(*args: object) -> Any:
        calls.append("called")
        raise RetriableError("app database: connection refused (after 5 attempts)")

    for name in ("observe_lists", "observe_contacts", "apply"):
        monkeypatch.setattr(app, name, unreachable)
    with pytest.raises(RetriableError, match="connection refused"):
        await engine.cycle()
    assert calls == ["called"]  # its lists; nothing after
    assert ctct.contacts[b].fields["first_name"] == "Bob"
    seen = await log.connection.execute_fetchall(
        "SELECT new_status FROM p_permissions WHERE store = 'ctct' AND email = ?",
        ("ann@example.org",),
    )
    assert [r[0] for r in seen][-1] == "unsubscribed"


async def test_a_store_whose_listing_fails_fatally_still_has_its_opt_outs_reach_the_other(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Constant Contact's quota runs out after the first page of the cycle's changes. That
    page's opt-outs still reach the app in the same cycle, nothing is sent to Constant Contact,
    and the cycle fails with the quota's error. The next cycle, with the quota back, lists the
    rest and carries the app's own change to Constant Contact."""

    engine, ctct, app = make(log)
    pairs = await six_pairs(engine, ctct, app, paged=ctct)
    for c, _ in pairs:
        ctct.opt_out(c, reason="too many emails")  # two pages of three
    app.edit(pairs[0][1], first_name="Q")  # the app's own change, for Constant Contact
    listing = ctct.observe_contacts
    error = QuotaExhaustedError("daily budget of 10000 requests spent", "2026-11-28T00:00Z")
    written = fail_listing_after_a_page(monkeypatch, ctct, error)
    with pytest.raises(QuotaExhaustedError, match="daily budget"):
        await engine.cycle()
    status = [app.contacts[a].permission.status for _, a in pairs]
    assert status == ["unsubscribed"] * 3 + ["implicit"] * 3  # the first page's three
    assert written == []
    monkeypatch.setattr(ctct, "observe_contacts", listing)
    later = datetime.now(UTC) + timedelta(hours=1)
    engine.clock = lambda: later
    await engine.cycle()
    assert [app.contacts[a].permission.status for _, a in pairs] == ["unsubscribed"] * 6
    assert ctct.contacts[pairs[0][0]].fields["first_name"] == "Q"
    assert ctct.violations == [] and app.violations == []


async def test_a_cycle_relaxes_the_collector_and_gives_the_process_its_settings_back(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = gc.get_threshold()
    engine, ctct, app = make(log)
    ctct.add("a@example.org", first_name="A")
    during: list[tuple[int, int, int]] = []
    app_apply = app.apply

    async def spy(commands: Any) -> Any:
        during.append(gc.get_threshold())
        return await app_apply(commands)

    monkeypatch.setattr(app, "apply", spy)
    await engine.cycle()
    assert during and during[0][0] > before[0]  # young collections far less often
    assert gc.get_threshold() == before

    async def fails(commands: Any) -> Any:
        raise FatalError("the app database is gone")

    ctct.add("b@example.org", first_name="B")
    monkeypatch.setattr(app, "apply", fails)
    with pytest.raises(FatalError):
        await engine.cycle()
    assert gc.get_threshold() == before


class _Tracking:
    """Constant Contact's tracking feed: these activities, once."""

    def __init__(self, activities: list[TrackingActivity]) -> None:
        self.activities = activities

    async def observe_tracking(
        self, resume: str | None, bound: datetime
    ) -> AsyncIterator[TrackingPage]:
        if resume is None:
            yield TrackingPage(
                request="fake tracking", activities=tuple(self.activities),
                content_hash="h", resume="1",
            )  # fmt: skip


class _App(FakeStore):
    """The app store, refusing tracking records while ``down``; what it took, in order."""

    def __init__(self) -> None:
        super().__init__("app")
        self.down = True
        self.received: list[TrackingActivity] = []

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        out = []
        for cmd in commands:
            if not isinstance(cmd, RecordTracking):
                out += await super().apply([cmd])
            elif self.down:
                out.append(Outcome(ok=False, error="503 service unavailable", retriable=True))
            else:
                self.received += cmd.activities
                out.append(Outcome(ok=True))
        return out


async def test_a_failed_tracking_record_reaches_the_app_whole_on_a_later_cycle(
    log: EventLog,
) -> None:
    # Tracking records are data, not decisions: a failed one is resent as it was issued, after
    # its backoff (its body is the one command body the projection keeps).
    ctct, app = FakeStore("ctct"), _App()
    c = ctct.add("ann@example.org", first_name="Ann")
    when = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    acts = [
        TrackingActivity(
            contact_id=c, email="ann@example.org", campaign_activity_id="camp-1", kind=kind,
            created_time=when + timedelta(minutes=i), details={"link_url": "https://x.example"},
        )
        for i, kind in enumerate(("send", "open", "click"))
    ]  # fmt: skip
    engine = SyncEngine(log, ctct, app, Policy(), tracking=_Tracking(acts))
    first = await engine.cycle()
    assert first.failed == 1 and app.received == []
    app.down = False
    soon = await engine.cycle()  # within the backoff: not resent yet
    assert soon.failed == 0 and app.received == []
    engine.clock = lambda: ctct.now.replace(year=2030)  # past the backoff
    await engine.cycle()
    assert sorted(app.received, key=lambda a: a.created_time) == acts
    assert (await engine.cycle()).failed == 0 and len(app.received) == 3  # sent once


async def test_a_delivered_tracking_record_is_settled_and_never_sent_again(
    log: EventLog,
) -> None:
    # Nothing observes a tracking record back from the app, so once the app took it, it is
    # settled ('delivered'). Left 'applied', every record ever forwarded stayed among the
    # commands awaiting confirmation: in the daemon's gauge, in `ccsync status`, and in the
    # index each cycle's sweep walks.
    ctct, app = FakeStore("ctct"), _App()
    app.down = False
    c = ctct.add("ann@example.org", first_name="Ann")
    sent = TrackingActivity(
        contact_id=c, email="ann@example.org", campaign_activity_id="camp-1", kind="send",
        created_time=datetime(2024, 3, 1, 9, 0, tzinfo=UTC),
    )  # fmt: skip
    engine = SyncEngine(log, ctct, app, Policy(), tracking=_Tracking([sent]))
    await engine.cycle()
    await engine.cycle()  # confirms Ann's creation in the app
    assert app.received == [sent]
    now = datetime.now(UTC)
    assert (await read_status(log, now, settled=False)).commands == {}
    assert (await read_status(log, now)).commands == {"confirmed": 1, "delivered": 1}
    # The same record decided again, a day later (a cycle that ended before its checkpoint):
    # not sent again.
    [issued] = [
        ic.command
        async for r in log.read()
        if isinstance(r.event, CommandIssued)
        for ic in r.event.commands
        if ic.kind == "tracking.record"
    ]
    again = await engine.outbox.execute(
        [msgspec.convert(issued, Command)], "run-2", now + timedelta(days=1)
    )
    assert again.skipped == 1 and app.received == [sent]


def _sent(contact: str) -> TrackingActivity:
    return TrackingActivity(
        contact_id=contact, email="ann@example.org", campaign_activity_id="camp-1", kind="send",
        created_time=datetime(2024, 3, 1, 9, 0, tzinfo=UTC),
    )  # fmt: skip


async def test_tracking_held_for_want_of_an_app_contact_goes_out_when_she_is_created(
    log: EventLog,
) -> None:
    # Ann's creation in the app fails in the cycle that fetches her activity: it has no app
    # contact to go to, so it is held, not sent to fail; the cycle that creates her sends it.
    ctct, app = FakeStore("ctct"), _App()
    app.down = False
    sent = _sent(ctct.add("ann@example.org", first_name="Ann"))
    engine = SyncEngine(log, ctct, app, Policy(), tracking=_Tracking([sent]))
    app.fail_next = 1
    first = await engine.cycle()
    assert first.failed == 1 and first.commands == {"contact.upsert": 1}
    [held] = await held_tracking(log)  # (`ccsync audit held`)
    assert (held.contact_id, held.email, held.activities) == (sent.contact_id, sent.email, 1)
    assert held.reason == "no app contact holds its address"
    engine.clock = lambda: ctct.now.replace(year=2030)  # past the backoff
    again = await engine.cycle()
    assert again.commands == {"contact.upsert": 1, "tracking.record": 1}
    assert app.received == [sent] and app.by_email("ann@example.org") is not None
    assert await held_tracking(log) == []
    await engine.cycle()
    assert (await engine.cycle()).commands == {} and app.received == [sent]


async def test_a_failed_tracking_record_whose_app_contact_is_deleted_is_not_sent_again(
    log: EventLog,
) -> None:
    # The app refuses Ann's activity, then a CRM user deletes her (deletions stay in the app):
    # the record is superseded, not sent at every cycle to fail.
    ctct, app = FakeStore("ctct"), _App()
    app.down = False
    sent = _sent(c := ctct.add("ann@example.org", first_name="Ann"))
    engine = SyncEngine(log, ctct, app, Policy())
    await engine.cycle()
    app.down = True
    engine.tracking = _Tracking([sent])
    assert (await engine.cycle()).failed == 1  # (and sees her in the app)
    app.delete(next(iter(app.contacts)))
    app.down = False
    engine.clock = lambda: ctct.now.replace(year=2030)  # past the backoff
    after = await engine.cycle()
    assert after.commands == {} and after.failed == 0 and app.received == []
    [(status, error)] = await commands_of(log, "tracking.record", "status, error")
    assert status == "superseded" and error.startswith("its contact has no live app contact")
    assert ctct.contacts[c].deleted is False  # (deletions do not propagate by default)
    assert (await engine.cycle()).commands == {}


class _QuotaAfterAPage(_Tracking):
    """A tracking feed that serves one page, then Constant Contact's quota is spent."""

    async def observe_tracking(
        self, resume: str | None, bound: datetime
    ) -> AsyncIterator[TrackingPage]:
        async for page in super().observe_tracking(resume, bound):
            yield page
        raise QuotaExhaustedError("quota_exceeded: the daily quota is spent", "2026-11-28T00:00Z")


async def test_a_quota_spent_while_tracking_is_fetched_still_lets_opt_outs_reach_the_app(
    log: EventLog,
) -> None:
    """Tracking is fetched after the contacts. When Constant Contact's quota runs out there,
    the opt-outs the cycle listed still reach the app, and so does the tracking page fetched
    before it; the cycle fails with the quota's error."""
    ctct, app = FakeStore("ctct"), _App()
    app.down = False
    c = ctct.add("ann@example.org", first_name="Ann")
    app.add("ann@example.org", first_name="Ann")
    engine = SyncEngine(log, ctct, app, Policy())
    await engine.cycle()
    await engine.cycle()  # paired, and quiet
    ctct.opt_out(c, reason="too many emails")
    when = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    sent = TrackingActivity(
        contact_id=c, email="ann@example.org", campaign_activity_id="camp-1", kind="send",
        created_time=when, details={},
    )  # fmt: skip
    engine.tracking = _QuotaAfterAPage([sent])
    with pytest.raises(QuotaExhaustedError, match="daily quota"):
        await engine.cycle()
    ann = app.by_email("ann@example.org")
    assert ann is not None and ann.permission.status == "unsubscribed"
    assert app.received == [sent]


class _PagedTracking:
    """A tracking feed of three pages whose token moves only with the last one (as the
    Constant Contact adapter's does between its moves)."""

    async def observe_tracking(
        self, resume: str | None, bound: datetime
    ) -> AsyncIterator[TrackingPage]:
        if resume is not None:
            return
        for k in range(3):
            yield TrackingPage(
                request=f"fake tracking page {k}", activities=(_sent(f"c{k}"),),
                content_hash=f"h{k}", resume="start" if k < 2 else "end",
            )  # fmt: skip


async def test_a_tracking_token_that_did_not_move_is_not_recorded_again(log: EventLog) -> None:
    ctct, app = FakeStore("ctct"), FakeStore("app")
    await SyncEngine(log, ctct, app, Policy(), tracking=_PagedTracking()).cycle()
    rows = await log.connection.execute_fetchall(
        "SELECT type FROM events WHERE stream = 'ctct:checkpoint:observe.ctct.tracking' "
        "ORDER BY position"
    )
    assert len(list(rows)) == 2  # "start" once, then "end": not "start" twice
    assert await log.checkpoint("observe.ctct.tracking") == "end"
    pages = await log.connection.execute_fetchall(
        "SELECT count(*) FROM events WHERE type = 'page.observed' "
        "AND instr(payload, 'fake tracking page') > 0"
    )
    assert next(iter(pages))[0] == 3  # every page is recorded
    rows = await log.connection.execute_fetchall(
        "SELECT count(*) FROM events WHERE type = 'tracking.recorded'"
    )
    assert next(iter(rows))[0] == 3
