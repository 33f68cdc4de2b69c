"""Contract: applying commands (run on the fake, SQLite and PostgreSQL, triggers and column)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.appdb import open_appdb
from adapters.appdb._driver import parse_time
from engine.commands import (
    AddToList,
    DeleteContact,
    RecordTracking,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
)
from engine.model import TrackingActivity
from tests.appdb.conftest import Factory
from tests.appdb.harness import Harness, Mirror, opened_harness, pg_available


@pytest.mark.asyncio
async def test_upsert_changes_only_the_given_fields(harness: Harness) -> None:
    await harness.app.update("1", notes="the app's own note")
    before = await harness.app.row("1")
    assert before is not None
    cmd = UpsertContact(
        target="app", email="x@example.org", store_id="1", fields={"first_name": "Zoë"}
    )
    [outcome] = await harness.db.apply([cmd])
    # (No command id required: the outbox pairs outcomes with commands by order.)
    assert outcome.ok and outcome.store_id == "1"
    after = await harness.app.row("1")
    assert after == {**before, "first_name": "Zoë"}


@pytest.mark.asyncio
async def test_upsert_none_clears_a_field(harness: Harness) -> None:
    cmd = UpsertContact(
        target="app", email="x@example.org", store_id="2", fields={"last_name": None}
    )
    assert (await harness.db.apply([cmd]))[0].ok
    row = await harness.app.row("2")
    assert row is not None and row["last_name"] is None


@pytest.mark.asyncio
async def test_upsert_creates_a_new_contact_with_its_lists(harness: Harness) -> None:
    create = UpsertContact(
        target="app", email="fresh@example.org", fields={"first_name": "Fresh"}, lists=("1", "3")
    )
    join = AddToList(target="app", email="fresh@example.org", list_id="2")
    created, joined = await harness.db.apply([create, join])
    assert created.ok and created.store_id and joined.ok and joined.store_id == created.store_id
    row = await harness.app.row(created.store_id)
    assert row is not None
    assert (row["email"], row["first_name"], row["lists"]) == (
        "fresh@example.org",
        "Fresh",
        ("1", "2", "3"),
    )


@pytest.mark.asyncio
async def test_upsert_by_email_finds_the_existing_row(harness: Harness) -> None:
    row = await harness.app.row("5")
    assert row is not None
    cmd = UpsertContact(target="app", email=row["email"].upper(), fields={"first_name": "ByMail"})
    cmd = UpsertContact(target="app", email=row["email"].casefold(), fields=cmd.fields)
    [outcome] = await harness.db.apply([cmd])
    assert outcome.ok and outcome.store_id == "5"
    assert (await harness.app.live())["5"][1] == "ByMail"


@pytest.mark.asyncio
async def test_new_email_renames_the_contact(harness: Harness) -> None:
    cmd = UpsertContact(
        target="app", email="old@example.org", store_id="6", fields={}, new_email="New@Example.org"
    )
    assert (await harness.db.apply([cmd]))[0].ok
    row = await harness.app.row("6")
    assert row is not None and row["email"] == "new@example.org"


@pytest.mark.asyncio
async def test_unsubscribe_records_the_reason(harness: Harness) -> None:
    cmd = Unsubscribe(
        target="app",
        email="x@example.org",
        store_id="7",
        reason="too many emails",
        opted_out_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert (await harness.db.apply([cmd]))[0].ok
    row = await harness.app.row("7")
    assert row is not None and row["unsubscribed"] and row["reason"] == "too many emails"


@pytest.mark.asyncio
async def test_membership_add_and_remove_are_idempotent(harness: Harness) -> None:
    add = AddToList(target="app", email="x@example.org", store_id="8", list_id="2")
    assert all(o.ok for o in await harness.db.apply([add, add]))
    assert all(o.ok for o in await harness.db.apply([add]))
    row = await harness.app.row("8")
    assert row is not None and "2" in row["lists"]
    remove = RemoveFromList(target="app", email="x@example.org", store_id="8", list_id="2")
    assert all(o.ok for o in await harness.db.apply([remove, remove]))
    row = await harness.app.row("8")
    assert row is not None and "2" not in row["lists"]


@pytest.mark.asyncio
async def test_soft_delete_keeps_the_row_and_observes_it_deleted(harness: Harness) -> None:
    mirror = Mirror()
    await mirror.sync(harness.db)
    [outcome] = await harness.db.apply([DeleteContact(target="app", email="x@e.org", store_id="9")])
    assert outcome.ok
    row = await harness.app.row("9")
    assert row is not None and row["deleted"]
    assert "9" not in await harness.app.live()
    again = await harness.db.apply([DeleteContact(target="app", email="gone@e.org")])
    assert again[0].ok and again[0].detail == "already absent"


@pytest.mark.asyncio
async def test_hard_delete_removes_the_row(make_harness: Factory) -> None:
    h = await make_harness(delete_mode="hard")
    [outcome] = await h.db.apply([DeleteContact(target="app", email="x@e.org", store_id="9")])
    assert outcome.ok
    assert await h.app.row("9") is None


@pytest.mark.asyncio
async def test_tracking_is_idempotent_per_contact_campaign_kind_and_time(harness: Harness) -> None:
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    acts = tuple(
        TrackingActivity(
            contact_id="ct-1",
            email="x@example.org",
            campaign_activity_id="ca-9",
            kind=kind,  # type: ignore[arg-type]
            created_time=at,
            campaign_name="Spring",
            details={"link_url": "https://example.org"} if kind == "click" else {},
        )
        for kind in ("send", "open", "click")
    )
    before = await harness.app.activities()
    cmd = RecordTracking(target="app", email="x@example.org", store_id="1", activities=acts)
    assert (await harness.db.apply([cmd]))[0].ok
    assert await harness.app.activities() == before + 3
    # The same activities again (a retried command, an overlapping tracking page): no new rows.
    dupe = RecordTracking(target="app", email="x@example.org", store_id="1", activities=acts[:2])
    assert all(o.ok for o in await harness.db.apply([cmd, dupe]))
    assert await harness.app.activities() == before + 3


@pytest.mark.asyncio
async def test_a_bad_command_fails_alone(harness: Harness) -> None:
    cmds = [
        UpsertContact(
            target="app", email="a@example.org", store_id="999999", fields={"first_name": "X"}
        ),
        UpsertContact(
            target="app", email="b@example.org", store_id="1", fields={}, new_email="nope"
        ),
        Unsubscribe(target="app", email="nobody@example.org"),
        UpsertContact(
            target="app", email="c@example.org", store_id="2", fields={"first_name": "Fine"}
        ),
        AddToList(target="app", email="x@example.org", store_id="3", list_id="424242"),
    ]
    outcomes = await harness.db.apply(cmds)
    assert [o.ok for o in outcomes] == [False, False, False, True, False]
    assert "999999" in (outcomes[0].error or "")
    assert "new_email" in (outcomes[1].error or "")
    assert "nobody@example.org" in (outcomes[2].error or "")
    assert "424242" in (outcomes[4].error or "")
    assert not any(o.retriable for o in outcomes)
    assert (await harness.app.live())["2"][1] == "Fine"


@pytest.mark.asyncio
async def test_own_writes_are_observed_back_with_the_values_written(harness: Harness) -> None:
    # The engine learns the app's new state, and confirms its commands, by observing them:
    # ccsync's writes must be read back like the app's own, showing exactly what was written.
    mirror = Mirror()
    first = await mirror.sync(harness.db)
    lists_of_5 = next(c.lists for p in first for c in p.contacts if c.store_id == "5")
    new_list = next(x for x in ("1", "2", "3") if x not in lists_of_5)
    await harness.db.apply(
        [
            UpsertContact(
                target="app", email="x@e.org", store_id="3", fields={"first_name": "Ours"}
            ),
            Unsubscribe(target="app", email="x@e.org", store_id="4"),
            AddToList(target="app", email="x@e.org", store_id="5", list_id=new_list),
        ]
    )
    await harness.app.update("6", first_name="Theirs")
    pages = await mirror.sync(harness.db)
    seen = {c.store_id: c for p in pages for c in p.contacts}
    assert {"3", "4", "5", "6"} <= seen.keys()
    assert seen["3"].fields["first_name"] == "Ours"
    assert seen["4"].permission.status == "unsubscribed"
    assert new_list in seen["5"].lists
    assert seen["6"].fields["first_name"] == "Theirs"


@pytest.mark.asyncio
async def test_an_upsert_that_changes_nothing_is_not_a_change(harness: Harness) -> None:
    mirror = Mirror()
    await mirror.sync(harness.db)
    row = await harness.app.row("2")
    assert row is not None
    same = UpsertContact(
        target="app", email="x@e.org", store_id="2", fields={"first_name": row["first_name"]}
    )
    [outcome] = await harness.db.apply([same])
    assert outcome.ok and outcome.store_id == "2"
    assert await harness.app.row("2") == row


@pytest.mark.asyncio
async def test_two_commands_creating_one_new_contact_make_one_row(harness: Harness) -> None:
    first = UpsertContact(
        target="app",
        email="twice@example.org",
        fields={"first_name": "First", "last_name": "Kept"},
        lists=("1",),
    )
    second = UpsertContact(target="app", email="twice@example.org", fields={"first_name": "Second"})
    a, b = await harness.db.apply([first, second])
    assert a.ok and b.ok and a.store_id and a.store_id == b.store_id
    assert [k for k, (e, _) in (await harness.app.live()).items() if e == "twice@example.org"] == [
        a.store_id
    ]
    row = await harness.app.row(a.store_id)
    assert row is not None
    assert (row["first_name"], row["last_name"], row["lists"]) == ("Second", "Kept", ("1",))


@pytest.mark.asyncio
async def test_batches_prepared_ahead_keep_each_commands_meaning(make_harness: Factory) -> None:
    # Two commands a batch: each batch's upserts are prepared while the one before it writes,
    # taking every command without a key for a new contact until the lookup says otherwise.
    h = await make_harness(write_batch=2)
    row5 = await h.app.row("5")
    assert row5 is not None
    cmds = [
        UpsertContact(target="app", email="x@e.org", store_id="1", fields={"first_name": "A"}),
        UpsertContact(target="app", email="n1@example.org", fields={"first_name": "N1"}),
        UpsertContact(target="app", email=row5["email"], fields={"first_name": "Found"}),
        UpsertContact(target="app", email="not-an-email", fields={"first_name": "Bad"}),
        UpsertContact(
            target="app", email="n2@example.org", fields={"first_name": "N2"}, lists=("1",)
        ),
        UpsertContact(target="app", email="x@e.org", store_id="2", fields={"first_name": "B"}),
    ]
    outcomes = await h.db.apply(cmds)
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True]
    assert "invalid email" in (outcomes[3].error or "")
    assert outcomes[2].store_id == "5"
    live = await h.app.live()
    assert [live[k][1] for k in ("1", "2", "5")] == ["A", "B", "Found"]
    n1, n2 = outcomes[1].store_id, outcomes[4].store_id
    assert n1 and n2 and live[n1] == ("n1@example.org", "N1") and live[n2][1] == "N2"
    row = await h.app.row(n2)
    assert row is not None and row["lists"] == ("1",)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_writes_are_stamped_with_the_syncs_clock(backend: str, tmp_path: Path) -> None:
    """The next cycle reads ccsync's writes back between its bounds, which come from the
    sync's clock: a sync on another clock than the machine's (a simulated daemon) must find
    its writes stamped with that clock, or it never sees them applied and sends them again."""
    if backend == "postgres" and not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    at = datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    async with opened_harness(backend, tmp_path, triggers=False) as h:
        db = await open_appdb(h.cfg, clock=lambda: at)
        try:
            outcomes = await db.apply(
                [
                    Unsubscribe(target="app", email="x@example.org", store_id="1", reason="r"),
                    UpsertContact(
                        target="app", email="y@example.org", store_id="2", fields={"city": "Oslo"}
                    ),
                    UpsertContact(target="app", email="clock.new@example.org", fields={}),
                ]
            )
        finally:
            await db.close()
        assert all(o.ok for o in outcomes), outcomes
        keys = [int(o.store_id or 0) for o in outcomes]
        rows = await h.app.d.fetch(
            "SELECT updated_at FROM contacts WHERE id IN (?, ?, ?)", tuple(keys)
        )
        assert [parse_time(r[0]) for r in rows] == [at] * 3
