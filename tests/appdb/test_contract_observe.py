"""Contract: observing contacts (run on the fake, SQLite and PostgreSQL, triggers and column)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.appdb.harness import PAGE, SAMPLE_SIZE, Harness, Mirror


@pytest.mark.asyncio
async def test_first_observation_is_a_full_paged_listing(harness: Harness) -> None:
    mirror = Mirror()
    pages = await mirror.sync(harness.db)
    assert all(p.full_scan for p in pages)
    assert len(pages) == -(-SAMPLE_SIZE // PAGE)  # pages of PAGE rows
    assert mirror.view() == await harness.app.live()
    one = mirror.state["1"]
    assert one.fields["first_name"] and one.fields["last_name"]
    assert one.email == one.email.casefold()


@pytest.mark.asyncio
async def test_resume_token_continues_after_that_page(harness: Harness) -> None:
    bound = datetime.now(UTC)
    pages = [p async for p in harness.db.observe_contacts(None, bound)]
    rest = [p async for p in harness.db.observe_contacts(pages[0].resume, bound)]
    first = [c.store_id for c in pages[0].contacts]
    later = [c.store_id for p in rest for c in p.contacts]
    assert sorted(first + later) == sorted(c.store_id for p in pages for c in p.contacts)
    assert not set(first) & set(later)


@pytest.mark.asyncio
async def test_inserts_updates_and_deletes_are_observed(harness: Harness) -> None:
    mirror = Mirror()
    await mirror.sync(harness.db)
    new = await harness.app.insert("late.comer@example.org", "Late")
    await harness.app.update("2", first_name="Renamed")
    await harness.app.delete("3")
    await harness.catch_up(mirror)
    assert mirror.state[new].email == "late.comer@example.org"
    assert mirror.state["2"].fields["first_name"] == "Renamed"
    assert "3" not in mirror.state
    assert mirror.view() == await harness.app.live()


@pytest.mark.asyncio
async def test_nothing_new_observes_nothing(harness: Harness) -> None:
    mirror = Mirror()
    await mirror.sync(harness.db)
    await harness.app.update("4", first_name="Once")
    await mirror.sync(harness.db)
    pages = await mirror.sync(harness.db)
    # Column mode re-reads its overlap window; what it shows must be unchanged rows only.
    seen = {c.store_id: c for p in pages for c in p.contacts}
    assert all(mirror.state[k] == rec for k, rec in seen.items())
    if not harness.column_mode:
        assert not seen


@pytest.mark.asyncio
async def test_app_writes_during_an_observation_are_not_lost(harness: Harness) -> None:
    mirror = Mirror()
    await mirror.sync(harness.db)
    for key in range(1, 11):
        await harness.app.update(str(key), last_name=f"Edit{key}")
    run = harness.db.observe_contacts(mirror.token, datetime.now(UTC))
    first = await anext(run)
    mirror.fold(first, None)
    # The app keeps writing while ccsync is between pages.
    await harness.app.update(first.contacts[0].store_id, first_name="AfterItsPage")
    await harness.app.update("10", first_name="AheadOfTheCursor")
    new = await harness.app.insert("during@example.org", "During")
    await harness.app.delete("9")
    async for page in run:
        mirror.fold(page, None)
    await harness.catch_up(mirror)
    assert mirror.view() == await harness.app.live()
    assert mirror.state[first.contacts[0].store_id].fields["first_name"] == "AfterItsPage"
    assert new in mirror.state and "9" not in mirror.state


@pytest.mark.asyncio
async def test_bad_rows_are_rejected_one_by_one_and_the_rest_goes_on(harness: Harness) -> None:
    bad = await harness.app.insert("not-an-email", "Bad")
    dup1 = await harness.app.insert("twin@example.org", "Twin")
    dup2 = await harness.app.insert("TWIN@example.org ", "Twin2")
    mirror = Mirror()
    await mirror.sync(harness.db)
    by_record = {r.record: r for r in mirror.rejected}
    assert by_record[bad].field == "email" and "invalid" in by_record[bad].problem
    assert by_record[dup1].field == "email" and dup2 in by_record[dup1].problem
    assert by_record[dup2].field == "email" and dup1 in by_record[dup2].problem
    assert "not-an-email" in by_record[bad].raw
    assert len(mirror.state) == SAMPLE_SIZE  # everything else was delivered


@pytest.mark.asyncio
async def test_a_duplicate_is_caught_when_the_other_row_did_not_change(harness: Harness) -> None:
    mirror = Mirror()
    await mirror.sync(harness.db)
    taken = mirror.state["1"].email
    # Row 2 takes row 1's address (padded, other case); row 1 itself is not touched.
    await harness.app.update("2", email=f" {taken[0].upper()}{taken[1:]}")
    pages = await mirror.sync(harness.db)
    assert pages and not any(p.full_scan for p in pages)  # an incremental run
    assert "1" not in {c.store_id for p in pages for c in p.contacts}
    [bad] = [r for p in pages for r in p.rejected]
    assert (bad.record, bad.field) == ("2", "email")
    assert "shared with row(s) 1;" in bad.problem
    assert "2" not in {c.store_id for p in pages for c in p.contacts}  # skipped


@pytest.mark.asyncio
async def test_lists_are_observed(harness: Harness) -> None:
    _request, lists = await harness.db.observe_lists()
    assert [(x.store_id, x.name) for x in lists] == [
        ("1", "Newsletter"),
        ("2", "Customers"),
        ("3", "Events"),
    ]
