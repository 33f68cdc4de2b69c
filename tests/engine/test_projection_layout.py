"""Projections written by a build with another table layout are rebuilt from the log at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cycle import SyncEngine
from engine.log import EventLog
from engine.policy import Policy
from projections.schema import TABLES
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
