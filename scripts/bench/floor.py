"""Benchmark: the floor under the initial sync — what storing its results costs, with no engine.

The initial-sync target (25,000 contacts/s at 100,000: 4.0 s) is measured by ``sync.py``. This
script asks a different question: how fast could *any* engine go that keeps what ccsync must
keep? It runs one initial sync (simulator -> log -> projections -> SQLite app database), then
writes the rows that sync left behind again, into fresh files with the same schema and pragmas,
with plain ``sqlite3`` and nothing else:

* the log's floor: every event row of the cycle, its hash chained again in Python (the chain is
  part of the format), and every projection row in its final state, inserted **once** (ccsync
  inserts a command's row at issue and updates it at the outcome), in transactions of 5,000
  events, each carrying the projection rows whose position falls in it. No reads, no diffing,
  no deciding, no JSON built: the rows arrive ready.
* the app database's floor: its tables' rows inserted again in ten transactions.
* fetching and decoding: the bare aiohttp + msgspec + sqlite3 baseline of ``sync.py``.

The three run on different connections, so on the machine's cores they could overlap. The
printed 2-core floor is the largest of: each one alone, and their sum over two cores. An
engine below it is impossible; ccsync's own cycle is printed beside it from the same run.

    .venv/bin/python scripts/bench/floor.py [--contacts 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _simproc import SimProcess
from sync import baseline, cpu_seconds, work_folder

from engine._logschema import GENESIS, ROW_COLUMNS, SCHEMA, row_hash
from engine.bootstrap import wire
from engine.cli._demo_setup import prepare_folder
from engine.log import WAL_CHECKPOINT_PAGES, WRITER_CACHE_KIB
from engine.logging import configure_logging
from engine.settings import load_settings
from projections.schema import PROJECTION_SCHEMA

EVENTS_PER_TRANSACTION = 5_000
APP_TRANSACTIONS = 10
TARGET_RATE = 25_000

# Each projection table whose rows are written in the cycle, with the column that says which
# event wrote the row (a row lands in the transaction of that event).
POSITIONED = {
    "p_contacts": "position",
    "p_lists": "position",
    "p_permissions": "position",
    "p_tracking": "position",
    "p_links": "position",
    "p_created": "position",
    "p_commands": "issued_position",
    "p_decisions": "position",
    "p_rejected": "position",
    "p_runs": "started_position",
}


def _rows(conn: sqlite3.Connection, table: str, order: str) -> tuple[list[str], list[tuple]]:
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
    return [d[0] for d in cur.description], cur.fetchall()


def _chunks(rows: list[tuple], n: int) -> Iterator[list[tuple]]:
    size = max(1, -(-len(rows) // n))
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def log_floor(
    src: Path, dst: Path, schema: str = SCHEMA + PROJECTION_SCHEMA
) -> tuple[float, float, int, int, int, dict[str, float]]:
    """Write the cycle's events and projection rows again; returns (wall, cpu, events,
    projection rows, transactions). Everything is read into memory before the clock starts."""
    with sqlite3.connect(src) as s:
        events = s.execute(f"SELECT {ROW_COLUMNS} FROM events ORDER BY position").fetchall()
        tables = {t: _rows(s, t, col) for t, col in POSITIONED.items()}
    conn = sqlite3.connect(dst, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    conn.executescript(schema)
    statements = {
        t: (
            f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            cols.index(POSITIONED[t]),
            rows,
        )
        for t, (cols, rows) in tables.items()
    }
    cursors = dict.fromkeys(statements, 0)
    spent = dict.fromkeys(["events", *statements, "COMMIT"], 0.0)
    transactions = 0
    cpu0, t0 = time.thread_time(), time.perf_counter()
    prev = GENESIS
    for batch in _chunks(events, max(1, len(events) // EVENTS_PER_TRANSACTION)):
        last = batch[-1][0]
        hashed = []
        for row in batch:
            prev = row_hash(prev, *row)
            hashed.append((*row, prev))
        conn.execute("BEGIN IMMEDIATE")
        c = time.thread_time()
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", hashed)
        spent["events"] += time.thread_time() - c
        for t, (sql, at, rows) in statements.items():
            i = j = cursors[t]
            while j < len(rows) and rows[j][at] <= last:
                j += 1
            if j > i:
                c = time.thread_time()
                conn.executemany(sql, rows[i:j])
                spent[t] += time.thread_time() - c
            cursors[t] = j
        c = time.thread_time()
        conn.execute("COMMIT")
        spent["COMMIT"] += time.thread_time() - c
        transactions += 1
    wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    conn.close()
    rows = sum(len(r) for *_, r in statements.values())
    return wall, cpu, len(events), rows, transactions, {k: v for k, v in spent.items() if v}


def app_floor(src: Path, dst: Path) -> tuple[float, float, int]:
    """Write the app database's rows again, in its own schema; returns (wall, cpu, rows)."""
    with sqlite3.connect(src) as s:
        mode = s.execute("PRAGMA journal_mode").fetchone()[0]
        ddl = [
            r[0]
            for r in s.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
                " ORDER BY type = 'table' DESC, rowid"
            )
        ]
        names = [
            r[0]
            for r in s.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        tables = {t: s.execute(f'SELECT * FROM "{t}"').fetchall() for t in names}
    conn = sqlite3.connect(dst, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {mode}")
    for statement in ddl:
        conn.execute(statement)
    cpu0, t0 = time.thread_time(), time.perf_counter()
    for k in range(APP_TRANSACTIONS):
        conn.execute("BEGIN IMMEDIATE")
        for t, rows in tables.items():
            share = rows[
                k * len(rows) // APP_TRANSACTIONS : (k + 1) * len(rows) // APP_TRANSACTIONS
            ]
            if share:
                marks = ", ".join("?" * len(share[0]))
                conn.executemany(f'INSERT INTO "{t}" VALUES ({marks})', share)
        conn.execute("COMMIT")
    wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    conn.close()
    return wall, cpu, sum(len(r) for r in tables.values())


async def main_async(args: argparse.Namespace) -> None:
    configure_logging(level="warning")
    n = args.contacts
    print(f"starting a simulator with {n:,} contacts ...", flush=True)
    sim = SimProcess(n, lists=6)
    try:
        access = await sim.access()
        with tempfile.TemporaryDirectory() as tmp:
            root = work_folder(tmp, args.keep)
            count, fetch = await baseline(sim, access.access_token, root / "raw.db")
            print(
                f"baseline  fetch + decode + store raw pages: {count:,} contacts in {fetch:.2f}s"
                f" = {count / fetch:,.0f}/s",
                flush=True,
            )
            config = await prepare_folder(
                root / "ccsync", access, app_contacts=0, tracking=False, overlap_seconds=1.0
            )
            async with wire(load_settings(config)) as w:
                cpu0, t0 = cpu_seconds(), time.perf_counter()
                first = await w.engine.cycle()
                secs, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            seen = first.observed.get("ctct.contacts", 0)
            print(
                f"ccsync    initial sync: {seen:,} contacts in {secs:.2f}s = {seen / secs:,.0f}/s;"
                f" CPU {cpu:.2f}s; commands {first.commands}",
                flush=True,
            )
            logs, apps = [], []
            for k in range(args.repeat):
                logs.append(log_floor(root / "ccsync" / "ccsync.db", root / f"floor{k}.db"))
                apps.append(app_floor(root / "ccsync" / "app.db", root / f"app{k}.db"))
                for stale in root.glob(f"*{k}.db*"):
                    os.unlink(stale)
            wall, lcpu, events, prows, txns, spent = min(logs)
            awall, acpu, arows = min(apps)
            print(
                f"floor     the log's SQL alone: {events:,} events + {prows:,} projection rows"
                f" in {txns} transactions: {wall:.2f}s (CPU {lcpu:.2f}s); runs "
                + ", ".join(f"{r[0]:.2f}" for r in logs)
            )
            print(
                "          CPU by statement: "
                + ", ".join(
                    f"{k} {v:.2f}s" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
                )
            )
            print(
                f"floor     the app database's SQL alone: {arows:,} rows: {awall:.2f}s "
                f"(CPU {acpu:.2f}s); runs " + ", ".join(f"{r[0]:.2f}" for r in apps)
            )
            parts = (wall, awall, fetch)
            floor = max(*parts, sum(parts) / 2)
            print(
                f"floor     on 2 cores, perfectly overlapped: {floor:.2f}s = "
                f"{seen / floor:,.0f} contacts/s (target {TARGET_RATE:,}/s = "
                f"{seen / TARGET_RATE:.2f}s); ccsync's cycle is {secs / floor:.1f}x it"
            )
            if args.repeat > 1:
                print(f"          (log floor median {statistics.median(r[0] for r in logs):.2f}s)")
    finally:
        sim.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--contacts", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3, help="floor runs (the fastest is used)")
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the cycle's files in this new folder (DIR/ccsync/ccsync.db, DIR/ccsync/app.db),"
        " to try other schemas with log_floor() afterwards",
    )
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
