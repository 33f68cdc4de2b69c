"""The lower(trim(email)) index: the planner uses it for lookups by email and for the per-row
duplicate check; without it the adapter still works (one whole-table check per run) and
``check`` warns, naming the statement that creates it. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.appdb import AppDatabase, AppDbConfig, create_sample_app, open_appdb
from adapters.appdb import sample_config_toml as config_toml
from adapters.appdb._observe import _dec
from engine.cli import main
from engine.commands import UpsertContact
from tests.appdb.harness import PG_DSN, Mirror, drop_schema, pg_available

INDEX = "contacts_email_lookup"
# Big enough that PostgreSQL's planner prefers an index to reading the table when it can.
ROWS = 20_000


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sample(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AppDbConfig]:
    """The sample CRM (with its email index) on each backend."""
    if request.param == "sqlite":
        yield await create_sample_app(str(tmp_path / "app.db"), contacts=ROWS, seed=2)
        return
    if not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        cfg = await create_sample_app(PG_DSN, contacts=ROWS, seed=2, schema=schema)
        db = await open_appdb(cfg)
        await db.driver.execute("ANALYZE contacts")
        await db.close()
        yield cfg
    finally:
        await drop_schema(schema)


async def plan(db: AppDatabase, sql: str, params: Any = ()) -> str:
    """The query plan, as text, of what the adapter sends."""
    if db.driver.dialect == "sqlite":
        rows = await db.driver.fetch(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(r[-1]) for r in rows)
    rows = await db.driver.fetch(f"EXPLAIN {sql}", params)
    return "\n".join(str(r[0]) for r in rows)


async def shared_emails(db: AppDatabase) -> list[tuple[str, str, str]]:
    """Rejected rows of one observation run: (key, column, problem)."""
    mirror = Mirror()
    await mirror.sync(db)
    return sorted((r.record, r.field, r.problem) for r in mirror.rejected)


@pytest.mark.asyncio
async def test_lookups_and_the_duplicate_check_probe_the_index(sample: AppDbConfig) -> None:
    async with await open_appdb(sample) as db:
        assert await db.warnings() == []
        emails = [str(r[0]) for r in await db.driver.fetch("SELECT email FROM contacts LIMIT 50")]
        lookup = await plan(db, *db._rows.by_email(emails))
        assert INDEX in lookup and "SCAN contacts\n" not in lookup + "\n"
        assert "Seq Scan" not in lookup
        sql = f"{db._rows.probed_select} WHERE c.id > ? ORDER BY c.id LIMIT ?"
        assert INDEX in await plan(db, sql, (5, 100))  # each row's own duplicate probe
        # The lookup finds the rows it is asked for, whatever their case and padding.
        cmds = [UpsertContact(target="app", email=e, fields={"first_name": "Same"}) for e in emails]
        outcomes = await db.apply(cmds)
        assert all(o.ok for o in outcomes) and len({o.store_id for o in outcomes}) == 50


@pytest.mark.asyncio
async def test_without_the_index_check_warns_and_duplicates_are_still_caught(
    sample: AppDbConfig,
) -> None:
    async with await open_appdb(sample) as db:
        await db.driver.execute(f"DROP INDEX {INDEX}")
        await db.driver.execute("UPDATE contacts SET email = ' Twin@Example.org' WHERE id = 7")
        await db.driver.execute("UPDATE contacts SET email = 'twin@example.org ' WHERE id = 9")
        await db.driver.execute(  # a soft-deleted third holder does not count
            "UPDATE contacts SET email = 'twin@example.org', deleted_at = CURRENT_TIMESTAMP "
            "WHERE id = 8"
        )
    twins = [
        ("7", "email", "email shared with row(s) 9; fix one of them in the app"),
        ("9", "email", "email shared with row(s) 7; fix one of them in the app"),
    ]
    async with await open_appdb(sample) as db:
        [warning] = await db.warnings()
        assert warning.startswith("appdb.contacts.email: no index on lower(trim(email))")
        statement = warning.split("Create the index: ")[1]
        create = "CREATE INDEX CONCURRENTLY" if sample.backend == "postgres" else "CREATE INDEX"
        assert statement == f'{create} "{INDEX}" ON "contacts" (lower(trim("email")));'
        assert await db.check() == []  # a warning, not a mismatch
        assert await shared_emails(db) == twins  # the whole-table check, once per run
        await db.driver.execute(statement)  # the statement works as given
    async with await open_appdb(sample) as db:
        assert await db.warnings() == []
        mirror = Mirror()
        await mirror.sync(db)  # a full scan: the whole-table check
        assert sorted((r.record, r.problem) for r in mirror.rejected) == [
            (k, p) for k, _, p in twins
        ]
        # An incremental run checks the rows it reads, through the index: row 9 changed,
        # row 7 did not.
        now = "now()" if sample.backend == "postgres" else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
        await db.driver.execute(
            f"UPDATE contacts SET email = 'TWIN@example.org', updated_at = {now} WHERE id = 9"
        )
        mirror.rejected.clear()
        await mirror.sync(db)
        assert [(r.record, r.problem) for r in mirror.rejected] == [(twins[1][0], twins[1][2])]


@pytest.mark.asyncio
async def test_a_run_reading_most_of_the_table_still_rejects_shared_emails(
    sample: AppDbConfig,
) -> None:
    async with await open_appdb(sample) as db:
        mirror = Mirror()
        await mirror.sync(db)
        assert mirror.rejected == []
        now = "now()" if sample.backend == "postgres" else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
        await db.driver.execute(f"UPDATE contacts SET updated_at = {now}")  # every row changed
        await db.driver.execute("UPDATE contacts SET email = ' Twin@Example.org' WHERE id = 7")
        await db.driver.execute("UPDATE contacts SET email = 'twin@example.org ' WHERE id = 9")
        # PostgreSQL checks such a run against the whole table once, SQLite row by row.
        token = _dec.decode(mirror.token or "")
        probed = await db._observer._probe_rows(token, datetime.now(UTC) + timedelta(seconds=1))
        assert probed is (sample.backend == "sqlite")
        pages = await mirror.sync(db, datetime.now(UTC) + timedelta(seconds=1))
        assert not any(p.full_scan for p in pages)
        assert sum(len(p.contacts) for p in pages) == ROWS - 2
        assert sorted((r.record, r.problem) for r in mirror.rejected) == [
            ("7", "email shared with row(s) 9; fix one of them in the app"),
            ("9", "email shared with row(s) 7; fix one of them in the app"),
        ]


@pytest.mark.asyncio
@pytest.mark.postgres
async def test_postgres_sessions_do_not_jit_compile_pages() -> None:
    # Pages with correlated subqueries look expensive to the planner; compiling each one
    # made observing a table with memberships 10-18 times slower (docs/BENCHMARKS.md).
    if not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        cfg = await create_sample_app(PG_DSN, contacts=3, schema=schema)
        async with await open_appdb(cfg) as db:
            assert await db.driver.fetch("SHOW jit") == [("off",)]
    finally:
        await drop_schema(schema)


def test_cli_check_warns_without_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    async def without_index() -> None:
        cfg = await create_sample_app(str(tmp_path / "app.db"), contacts=5)
        async with await open_appdb(cfg) as db:
            await db.driver.execute(f"DROP INDEX {INDEX}")

    asyncio.run(without_index())
    config = tmp_path / "ccsync.toml"
    config.write_text(config_toml("sqlite", "app.db"))
    assert main(["appdb", "check", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert "ok: the mapping matches the database" in out.out
    assert (
        "warning: appdb.contacts.email: no index on lower(trim(email)) of contacts" in out.err
        and 'CREATE INDEX "contacts_email_lookup" ON "contacts" (lower(trim("email")));' in out.err
    )
