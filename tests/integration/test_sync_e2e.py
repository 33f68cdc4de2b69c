"""The whole sync on real parts: the simulator on loopback, a SQLite app database, the log."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from engine.audit import held_tracking
from engine.bootstrap import Wired, wire
from engine.cli._demo_setup import prepare_folder
from engine.errors import QuotaExhaustedError
from engine.settings import load_settings

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(SimulatorConfig(contacts=300, seed=3, lists=4, campaigns=2)) as s:
        yield s


def app_rows(folder: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(folder / "app.db") as conn:
        return conn.execute(sql, args).fetchall()


async def test_initial_sync_then_changes_converge_and_a_quiet_cycle_writes_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    config = await prepare_folder(tmp_path, sim, app_contacts=40)
    settings = load_settings(config)
    async with wire(settings) as w:
        first = await w.engine.cycle()
        assert first.failed == 0, first
        # Every live Constant Contact contact now exists in the app, and vice versa.
        ctct_live = {c.email for c in sim.account.contacts if not c.deleted}
        app_emails = {r[0] for r in app_rows(tmp_path, "SELECT lower(email) FROM contacts")}
        assert ctct_live <= app_emails
        await w.engine.cycle()
        # Hours later (past any retry backoff), with nothing changed anywhere: nothing to do.
        later = datetime.now(UTC) + timedelta(hours=3)
        w.engine.clock = lambda: later
        sim.reset_requests()
        quiet = await w.engine.cycle()
        assert quiet.commands == {}, quiet.commands
        writes = {k: v for k, v in sim.requests.items() if not k.startswith("GET")}
        assert writes == {}


async def test_unsubscribe_that_does_not_move_updated_at_reaches_the_app(
    tmp_path: Path, sim: Simulator
) -> None:
    config = await prepare_folder(tmp_path, sim, app_contacts=10)
    async with wire(load_settings(config)) as w:
        await w.engine.cycle()
        await w.engine.cycle()
        target = next(
            c for c in sim.account.contacts if not c.deleted and c.permission != "unsubscribed"
        )
        before = target.updated_at
        sim.account.unsubscribe(target.contact_id, reason="moved away", source="Contact")
        assert target.updated_at == before  # the API pitfall: top-level updated_at is unchanged
        summary = await w.engine.cycle()
        assert summary.commands.get("contact.unsubscribe") == 1
        rows = app_rows(
            tmp_path,
            "SELECT email_status, unsubscribe_reason FROM contacts WHERE lower(email) = ?",
            target.email,
        )
        assert rows == [("unsubscribed", "moved away")]
        # The app's new state is observed and agrees: nothing is sent again, however late.
        later = datetime.now(UTC) + timedelta(hours=3)
        w.engine.clock = lambda: later
        await w.engine.cycle()
        again = await w.engine.cycle()
        assert again.commands == {}, again.commands


async def test_an_address_corrected_in_the_app_before_its_import_was_listed_is_one_person(
    tmp_path: Path, sim: Simulator
) -> None:
    # Constant Contact's import does not say the id of a contact it creates. A CRM user
    # corrects an address right after ccsync created the contact there: the next cycle finds
    # the contact under the address ccsync made it with, pairs it, and corrects it there too.
    config = await prepare_folder(tmp_path, sim, app_contacts=10)
    before = {c.email for c in sim.account.contacts}
    async with wire(load_settings(config)) as w:
        await w.engine.cycle()
        key, email = next(
            (k, e)
            for k, e in app_rows(tmp_path, "SELECT id, lower(email) FROM contacts ORDER BY id")
            if e not in before
        )
        [made] = [c for c in sim.account.contacts if c.email == email]
        fixed = f"fixed.{email}"
        with sqlite3.connect(tmp_path / "app.db") as db:
            db.execute(
                "UPDATE contacts SET email = ?, updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') "
                "WHERE id = ?",
                (fixed, key),
            )
        await w.engine.cycle()
        assert [c.email for c in sim.account.contacts if c.email in (email, fixed)] == [fixed]
        assert made.email == fixed  # the same contact, not a new one
        assert app_rows(
            tmp_path, "SELECT id FROM contacts WHERE lower(email) IN (?, ?)", email, fixed
        ) == [(key,)]
        await w.engine.cycle()
        later = datetime.now(UTC) + timedelta(hours=3)
        w.engine.clock = lambda: later
        assert (await w.engine.cycle()).commands == {}


def _rescan_every_cycle(config: Path) -> None:
    """App deletions found at every cycle (by default a daily key-set comparison finds them)."""
    text = config.read_text()
    config.write_text(text.replace("[appdb]\n", "[appdb]\nfull_scan_interval_seconds = 0\n", 1))


def _delete_first_app_row(folder: Path) -> tuple[int, str]:
    """Delete the app's first contact row (its memberships first); its key and address."""
    [(key, email)] = app_rows(folder, "SELECT id, lower(email) FROM contacts ORDER BY id LIMIT 1")
    with sqlite3.connect(folder / "app.db") as db:
        db.execute("DELETE FROM list_members WHERE contact_id = ?", (key,))
        db.execute("DELETE FROM contacts WHERE id = ?", (key,))
    return int(str(key)), str(email)


async def _quiet_hours_later(w: Wired) -> None:
    """Hours later (past every backoff), with nothing changed: a cycle with nothing to do."""
    later = datetime.now(UTC) + timedelta(hours=7)
    w.engine.clock = lambda: later
    quiet = await w.engine.cycle()
    assert quiet.commands == {} and quiet.failed == 0, quiet


async def test_tracking_of_a_contact_deleted_in_the_app_is_held_not_retried_for_ever(
    tmp_path: Path, sim: Simulator
) -> None:
    # A CRM user deletes a contact; deletions do not propagate to Constant Contact (the
    # default), so its campaigns still reach her there. Her new activity has no app contact to
    # be recorded for: it is kept in the log and held, not sent to fail at every cycle.
    config = await prepare_folder(tmp_path, sim, app_contacts=10)
    _rescan_every_cycle(config)
    async with wire(load_settings(config)) as w:
        await w.engine.cycle()
        await w.engine.cycle()
        key, email = _delete_first_app_row(tmp_path)
        await w.engine.cycle()  # sees the deletion
        [her] = [c for c in sim.account.contacts if c.email == email]
        activity = next(iter(sim.tracking.records))
        sim.call(lambda: sim.tracking.record(activity, her, "em_opens", {"device_type": "Mobile"}))
        seen = await w.engine.cycle()
        assert seen.failed == 0 and "tracking.record" not in seen.commands, seen
        assert seen.tracking_held == 1  # (in the cycle's summary line and its recorded counts)
        held = await w.log.connection.execute_fetchall(
            "SELECT kind FROM p_tracking WHERE contact_id = ? AND kind = 'open'", (her.contact_id,)
        )
        assert list(held)  # recorded all the same
        [listed] = await held_tracking(w.log)  # (`ccsync audit held`)
        assert (listed.contact_id, listed.reason) == (
            her.contact_id,
            f"its app contact {key} was deleted",
        )
        await _quiet_hours_later(w)


async def test_tracking_of_a_contact_deleted_in_constant_contact_before_any_sync_is_held(
    tmp_path: Path, sim: Simulator
) -> None:
    # A subscriber who was mailed, then deleted from the account before ccsync's first sync:
    # ccsync creates no app contact for a deleted one, so her activity has nowhere to go.
    config = await prepare_folder(tmp_path, sim, app_contacts=10)
    activity = next(iter(sim.tracking.records))
    mailed = {r.contact_id for recs in sim.tracking.records[activity].values() for r in recs}
    gone = next(c for c in sim.account.contacts if c.contact_id in mailed and not c.deleted)
    sim.call(lambda: sim.account.delete_contact(gone.contact_id))
    async with wire(load_settings(config)) as w:
        first = await w.engine.cycle()
        assert first.failed == 0, first
        assert not app_rows(tmp_path, "SELECT id FROM contacts WHERE lower(email) = ?", gone.email)
        await w.engine.cycle()
        await _quiet_hours_later(w)


async def test_a_row_deleted_in_the_app_without_triggers_is_found_by_the_full_scan(
    tmp_path: Path, sim: Simulator
) -> None:
    config = await prepare_folder(tmp_path, sim, app_contacts=10)
    _rescan_every_cycle(config)
    text = config.read_text()
    text = text.replace(
        'source_of_record = "app"\n', 'source_of_record = "app"\ndelete_app_to_ctct = true\n'
    )
    config.write_text(text)
    async with wire(load_settings(config)) as w:
        await w.engine.cycle()
        await w.engine.cycle()
        key, email = _delete_first_app_row(tmp_path)
        summary = await w.engine.cycle()
        assert summary.commands.get("contact.delete") == 1, summary.commands
        [gone] = [c for c in sim.account.contacts if c.email == email]
        assert gone.deleted
        rows = await w.log.connection.execute_fetchall(
            "SELECT type FROM events WHERE stream = ? ORDER BY position", (f"app:contact:{key}",)
        )
        assert [r[0] for r in rows][-1] == "contact.deleted"


async def test_when_the_quota_runs_out_mid_listing_the_app_still_gets_what_was_listed(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four contacts unsubscribe in Constant Contact, one per page of the cycle's listing, and
    the day's quota runs out after the first of those pages. The unsubscribes listed before it
    (that page's, and the one the adapter had read ahead) reach the app in the same cycle; the
    cycle fails with the quota's error, Constant Contact is not written (the app's edit
    waits), and once the quota is back the next cycle carries the rest."""
    config = await prepare_folder(tmp_path, sim, app_contacts=10)
    config.write_text(config.read_text().replace("[ctct]\n", "[ctct]\npage_size = 1\n", 1))
    async with wire(load_settings(config)) as w:
        await w.engine.cycle()
        await w.engine.cycle()
        live = [c for c in sim.account.contacts if not c.deleted]
        gone = [c for c in live if c.permission != "unsubscribed"][:4]
        for c in gone:
            sim.account.unsubscribe(c.contact_id, reason="moved away", source="Contact")
        with sqlite3.connect(tmp_path / "app.db") as db:  # an edit for Constant Contact
            [(key, email)] = db.execute(
                "SELECT id, lower(email) FROM contacts WHERE email_status != 'unsubscribed' "
                "ORDER BY id DESC LIMIT 1"
            ).fetchall()
            db.execute(
                "UPDATE contacts SET job_title = 'Treasurer', "
                "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = ?",
                (key,),
            )
        budget = w.ctct.client.budget
        listing = w.ctct.observe_contacts
        resets = datetime.now(UTC) + timedelta(hours=1)

        ids = {c.contact_id for c in gone}

        async def quota_spent_after_a_page(resume: str | None, bound: datetime) -> AsyncIterator:
            async for page in listing(resume, bound):
                if any(r.store_id in ids for r in page.contacts):
                    budget.mark_exhausted(resets)  # the next request is refused
                yield page

        monkeypatch.setattr(w.ctct, "observe_contacts", quota_spent_after_a_page)
        sim.reset_requests()
        with pytest.raises(QuotaExhaustedError):
            await w.engine.cycle()

        def unsubscribed() -> list[str]:
            return [
                c.email
                for c in gone
                if app_rows(
                    tmp_path, "SELECT email_status FROM contacts WHERE lower(email) = ?", c.email
                )
                == [("unsubscribed",)]
            ]

        assert 0 < len(unsubscribed()) < len(gone)
        assert not any(k.startswith(("PUT", "POST")) for k in sim.requests)
        monkeypatch.setattr(w.ctct, "observe_contacts", listing)
        budget.mark_exhausted(datetime.now(UTC))  # the quota is back
        later = datetime.now(UTC) + timedelta(hours=3)  # past the failed commands' backoff
        w.engine.clock = lambda: later
        await w.engine.cycle()
        assert unsubscribed() == [c.email for c in gone]
        [ctct_side] = [c for c in sim.account.contacts if c.email == email]
        assert ctct_side.job_title == "Treasurer"
