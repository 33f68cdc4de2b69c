"""Benchmark: the app database adapter against a raw bulk write of the same rows.

For each backend (SQLite through aiosqlite; PostgreSQL through asyncpg, if it is running):

* baseline: insert N contact rows with a raw ``executemany`` (SQLite) or ``COPY`` (PostgreSQL)
  through the same driver;
* observe (column): read those N changed rows as ContactRecords through the updated-at column;
* observe (triggers): read N changes from the change table (after one UPDATE touched every row);
* apply: N UpsertContact commands (three fields each) through ``AppDatabase.apply``.

Each figure is printed as rows/second beside the baseline of the same run, with the ratio.
Run: ``.venv/bin/python scripts/bench/appdb.py [--rows 100000] [--backend sqlite|postgres]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import asyncpg
import msgspec

from adapters.appdb import AppDatabase, create_sample_app, open_appdb
from adapters.appdb._sqlite import sqlite_time
from adapters.appdb.sample import sample_rows
from engine.commands import UpsertContact

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
COLS = (
    "id", "email", "first_name", "last_name", "company", "job_title", "phone", "mobile",
    "city", "country", "birthday_month", "birthday_day", "tier", "email_status", "updated_at",
)  # fmt: skip


async def timed(fn: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    start = time.perf_counter()
    n = await fn()
    return n, time.perf_counter() - start


async def observe_all(db: AppDatabase, resume: str | None) -> int:
    n = 0
    async for page in db.observe_contacts(resume, datetime.now(UTC) + timedelta(seconds=1)):
        n += len(page.contacts)
    return n


def column_token() -> str:
    # A column-mode checkpoint from an hour ago whose full scan is not due: every row is
    # "changed since" and is read through the incremental path.
    now = datetime.now(UTC)
    since = (now - timedelta(days=1)).isoformat()
    return msgspec.json.encode({"mode": "column", "since": since, "last_scan": now.isoformat()}).decode()


def upserts(rows: list[tuple[object, ...]]) -> list[UpsertContact]:
    return [
        UpsertContact(
            target="app",
            email=str(r[1]),
            store_id=str(r[0]),
            fields={"first_name": f"F{r[0]}", "job_title": "Director", "cf:tier": "gold"},
        )
        for r in rows
    ]


async def bench_sqlite(n: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="appdb-bench-"))
    path = str(tmp / "app.db")
    cfg = await create_sample_app(path, contacts=0)
    rows = [(*r[:-1], sqlite_time(r[-1])) for r in sample_rows(n, seed=1)]  # type: ignore[arg-type]

    async def baseline() -> int:
        async with aiosqlite.connect(path) as conn:
            marks = ", ".join("?" * len(COLS))
            await conn.executemany(f"INSERT INTO contacts ({', '.join(COLS)}) VALUES ({marks})", rows)
            await conn.commit()
        return n

    out: dict[str, float] = {}
    _, out["baseline"] = await timed(baseline)
    db = await open_appdb(cfg)
    try:
        token = column_token()
        got, out["observe_column"] = await timed(lambda: observe_all(db, token))
        assert got == n, got
        await db.install_triggers()
        steady = [p.resume async for p in db.observe_contacts(None, datetime.now(UTC))][-1]
        await db.driver.execute("UPDATE contacts SET first_name = first_name || '.'")
        got, out["observe_triggers"] = await timed(lambda: observe_all(db, steady))
        assert got == n, got
        await db.uninstall_triggers()
        cmds = upserts(rows)

        async def apply() -> int:
            outcomes = await db.apply(cmds)
            assert all(o.ok for o in outcomes)
            return len(outcomes)

        _, out["apply"] = await timed(apply)
    finally:
        await db.close()
    return out


async def bench_postgres(n: int) -> dict[str, float]:
    schema = "bench_" + uuid.uuid4().hex[:10]
    cfg = await create_sample_app(PG_DSN, contacts=0, schema=schema)
    rows = sample_rows(n, seed=1)
    conn = await asyncpg.connect(PG_DSN)
    out: dict[str, float] = {}
    try:

        async def baseline() -> int:
            await conn.copy_records_to_table("contacts", records=rows, columns=COLS, schema_name=schema)
            return n

        _, out["baseline"] = await timed(baseline)
        await conn.execute(f'ANALYZE "{schema}".contacts')
        db = await open_appdb(cfg)
        try:
            token = column_token()
            got, out["observe_column"] = await timed(lambda: observe_all(db, token))
            assert got == n, got
            await db.install_triggers()
            steady = [p.resume async for p in db.observe_contacts(None, datetime.now(UTC))][-1]
            await db.driver.execute("UPDATE contacts SET first_name = first_name || '.'")
            got, out["observe_triggers"] = await timed(lambda: observe_all(db, steady))
            assert got == n, got
            await db.uninstall_triggers()
            cmds = upserts(rows)

            async def apply() -> int:
                outcomes = await db.apply(cmds)
                assert all(o.ok for o in outcomes)
                return len(outcomes)

            _, out["apply"] = await timed(apply)
        finally:
            await db.close()
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    return out


def report(backend: str, n: int, secs: dict[str, float]) -> None:
    base = n / secs["baseline"]
    label = "executemany" if backend == "sqlite" else "COPY"
    print(f"\n{backend}: {n} rows")
    print(f"  {'baseline (raw ' + label + ')':32} {base:>10,.0f} rows/s  {secs['baseline']:.2f}s")
    for key in ("observe_column", "observe_triggers", "apply"):
        rate = n / secs[key]
        print(f"  {key:32} {rate:>10,.0f} rows/s  {secs[key]:.2f}s  ratio {rate / base:.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), action="append")
    args = parser.parse_args()
    for backend in args.backend or ("sqlite", "postgres"):
        if backend == "sqlite":
            report(backend, args.rows, await bench_sqlite(args.rows))
        else:
            report(backend, args.rows, await bench_postgres(args.rows))


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main())
