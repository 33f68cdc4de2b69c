"""The whole sync on real parts: the simulator on loopback, a SQLite app database, the log."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from engine.bootstrap import wire
from engine.cli._demo_setup import prepare_folder
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


async def test_a_row_deleted_in_the_app_without_triggers_is_found_by_the_full_scan(
    tmp_path: Path, sim: Simulator
) -> None:
    config = await prepare_folder(tmp_path, sim, app_contacts=10)
    text = config.read_text()
    text = text.replace("[appdb]\n", "[appdb]\nfull_scan_interval_seconds = 0\n", 1)
    text = text.replace(
        'source_of_record = "app"\n', 'source_of_record = "app"\ndelete_app_to_ctct = true\n'
    )
    config.write_text(text)
    async with wire(load_settings(config)) as w:
        await w.engine.cycle()
        await w.engine.cycle()
        [(key, email)] = app_rows(
            tmp_path, "SELECT id, lower(email) FROM contacts ORDER BY id LIMIT 1"
        )
        with sqlite3.connect(tmp_path / "app.db") as db:
            db.execute("DELETE FROM list_members WHERE contact_id = ?", (key,))
            db.execute("DELETE FROM contacts WHERE id = ?", (key,))
        summary = await w.engine.cycle()
        assert summary.commands.get("contact.delete") == 1, summary.commands
        [gone] = [c for c in sim.account.contacts if c.email == email]
        assert gone.deleted
        rows = await w.log.connection.execute_fetchall(
            "SELECT type FROM events WHERE stream = ? ORDER BY position", (f"app:contact:{key}",)
        )
        assert [r[0] for r in rows][-1] == "contact.deleted"
