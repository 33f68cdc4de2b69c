"""Projections written by a build with another table layout are rebuilt from the log at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.audit import DECISIONS_OF
from engine.cycle import HELD_TRACKING_SQL, NEW_TRACKING_SQL, SyncEngine
from engine.events import (
    AppliedCommand,
    CommandApplied,
    CommandConfirmed,
    CommandIssued,
    Created,
    IssuedCommand,
)
from engine.log import EventLog, Recorded
from engine.pairs import by_email_sql
from engine.policy import Policy
from projections.runner import apply_batch
from projections.schema import TABLES, VERSION
from tests.engine.fakes import FakeStore

pytestmark = pytest.mark.asyncio


async def dump(log: EventLog) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    for table, key in TABLES.items():
        rows = await log.connection.execute_fetchall(f"SELECT * FROM {table} ORDER BY {key}")
        out[table] = [tuple(r) for r in rows]
    return out


async def test_projections_of_an_older_layout_are_dropped_and_rebuilt_equal(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    ctct, app = FakeStore("ctct"), FakeStore("app")
    for i in range(30):
        ctct.add(f"c{i}@example.org", first_name=f"C{i}")
        app.add(f"a{i}@example.org", first_name=f"A{i}")
    async with await EventLog.open(path) as log:
        await SyncEngine(log, ctct, app, Policy()).cycle()
        before = await dump(log)
        # What an earlier build left: the same tables, no layout version, a contacts table
        # keyed WITHOUT ROWID, and a checkpoint that claims everything is folded.
        conn = log.connection
        await conn.execute("DROP TABLE p_meta")
        await conn.execute("ALTER TABLE p_contacts RENAME TO p_old")
        await conn.execute(
            "CREATE TABLE p_contacts (store TEXT NOT NULL, store_id TEXT NOT NULL, email TEXT "
            "NOT NULL, position INTEGER NOT NULL, state BLOB NOT NULL, "
            "PRIMARY KEY (store, store_id)) WITHOUT ROWID"
        )
        await conn.execute("DROP TABLE p_old")
    assert sum(len(v) for v in before.values()) > 60
    async with await EventLog.open(path) as log:
        engine = SyncEngine(log, ctct, app, Policy())
        await engine.start()
        assert await dump(log) == before
        layout = await log.connection.execute_fetchall(
            "SELECT sql FROM sqlite_schema WHERE name = 'p_contacts'"
        )
        assert "WITHOUT ROWID" not in next(iter(layout))[0]


async def test_partners_are_looked_up_through_the_email_index(tmp_path: Path) -> None:
    """Pairing looks partners up by address, a chunk at a time: through the email index, not
    by reading every contact of the store for each chunk (which made a second cycle after an
    initial sync of 100,000 contacts take 76 s instead of 28)."""
    async with await EventLog.open(tmp_path / "log.db") as log:
        await SyncEngine(log, FakeStore("ctct"), FakeStore("app"), Policy()).cycle()
        for store in ("ctct", None):
            sql = by_email_sql(3, store)
            args = ["a@x.org", "b@x.org", "c@x.org"] if store is None else [store, "a", "b", "c"]
            plan = await log.connection.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}", args)
            assert [r[3] for r in plan] == [
                "SEARCH p_contacts USING INDEX p_contacts_email (email=?)"
            ]


async def test_a_contacts_decisions_are_read_through_the_email_index(tmp_path: Path) -> None:
    # (``audit contact`` looks them up for one address: not by reading every decision.)
    async with await EventLog.open(tmp_path / "log.db") as log:
        await SyncEngine(log, FakeStore("ctct"), FakeStore("app"), Policy()).cycle()
        plan = await log.connection.execute_fetchall(
            f"EXPLAIN QUERY PLAN {DECISIONS_OF}", ["a@x.org"]
        )
        assert [r[3] for r in plan] == [
            "SEARCH p_decisions USING INDEX p_decisions_email (email=?)"
        ]


async def test_new_tracking_is_read_through_the_position_index(tmp_path: Path) -> None:
    """Each cycle forwards the tracking recorded since the last: it reads those rows only."""
    async with await EventLog.open(tmp_path / "log.db") as log:
        await SyncEngine(log, FakeStore("ctct"), FakeStore("app"), Policy()).cycle()
        plan = await log.connection.execute_fetchall(f"EXPLAIN QUERY PLAN {NEW_TRACKING_SQL}", [0])
        assert next(r[3] for r in plan) == "SEARCH t USING INDEX p_tracking_position (position>?)"
        # The tracking held for want of an app contact: through the pairs made since, only.
        plan = await log.connection.execute_fetchall(
            f"EXPLAIN QUERY PLAN {HELD_TRACKING_SQL}", [0, 0]
        )
        assert [r[3] for r in plan][:2] == [
            "SEARCH l USING COVERING INDEX p_links_position (position>?)",
            "SEARCH t USING INDEX sqlite_autoindex_p_tracking_1 (store=? AND contact_id=?)",
        ]


async def test_replay_check_of_projections_an_earlier_build_laid_out_says_to_upgrade_first(
    tmp_path: Path,
) -> None:
    # After an upgrade that changes the layout, the live tables are the earlier build's until
    # ccsync next opens the log for writing: comparing them with this build's rebuild would
    # report every changed row as a mismatch, which an auditor would take for corruption.
    path, config = tmp_path / "log.db", tmp_path / "ccsync.toml"
    config.write_text('[log]\npath = "log.db"\n')
    ctct, app = FakeStore("ctct"), FakeStore("app")
    for i in range(5):
        ctct.add(f"c{i}@example.org", first_name=f"C{i}")
    async with await EventLog.open(path) as log:
        await SyncEngine(log, ctct, app, Policy()).cycle()
        await log.connection.execute("UPDATE p_meta SET value = '4' WHERE key = 'version'")

    def replay(flag: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "engine.cli", "replay", flag, "--config", str(config)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    before = await asyncio.to_thread(replay, "--check")
    assert before.returncode == 2, before.stderr
    assert f"have layout 4, this build writes layout {VERSION}" in before.stderr
    assert "MISMATCH" not in before.stderr

    # The upgrade an auditor runs on a copied folder: no store is configured or contacted.
    upgrade = await asyncio.to_thread(replay, "--upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"from layout 4 to layout {VERSION}" in upgrade.stdout
    after = await asyncio.to_thread(replay, "--check")
    assert after.returncode == 0, after.stderr
    assert "ok: a rebuild from zero" in after.stdout
    again = await asyncio.to_thread(replay, "--upgrade")
    assert f"already have layout {VERSION}" in again.stdout


class _Statements:
    """A transaction's queue that keeps the statements the fold sends (its reads find none)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def bulk(self, sql: str, rows: Any, blobs: Any = ()) -> None:
        if list(rows):
            self.sent.append(sql)

    async def execute(self, sql: str, parameters: Any = ()) -> None:
        self.sent.append(sql)

    async def execute_fetchall(self, sql: str, parameters: Any = ()) -> list[Any]:
        return []


async def test_a_batch_of_commands_is_projected_in_a_few_statements_not_one_per_command() -> None:
    # A sync records thousands of commands an event; each kind of effect they have on the
    # tables goes as one bulk statement. (Text built per command, not one constant, made each
    # command's outcome a statement of its own: 2-4 s of a 100,000-contact initial sync.)
    ids = [f"{i:012x}" for i in range(1000)]
    issued = CommandIssued(
        store="app", key="b1", run_id="r",
        commands=tuple(
            IssuedCommand(command_id=c, kind="contact.upsert", command={"email": f"{c}@x.org"})
            for c in ids
        ),
    )  # fmt: skip
    applied = CommandApplied(
        store="app", key="b2", run_id="r",
        applied=tuple(
            AppliedCommand(command_id=c, created=Created(f"s{c}", f"{c}@x.org")) for c in ids
        ),
    )  # fmt: skip
    confirmed = CommandConfirmed(store="app", key="b3", run_id="r", command_ids=tuple(ids))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        Recorded(p, f"e{p}", f"app:command:b{p}", 1, at, ev)
        for p, ev in enumerate((issued, applied, confirmed), start=1)
    ]
    conn = _Statements()
    await apply_batch(conn, batch)  # type: ignore[arg-type]
    # issued, applied, created, confirmed, and the checkpoint
    assert len(conn.sent) == 5, conn.sent
