"""Benchmark: inserting rows from a thread of its own, executemany against one json_each
statement (engine._pending.bulk_op), alone and beside a busy Python thread.

The log writes through aiosqlite, whose thread needs the GIL to bind every row of an
executemany; while the event loop's thread runs Python, the writer waits for the GIL at each
row. One json_each statement binds one parameter and inserts every row without the GIL.

    .venv/bin/python scripts/bench/sqlite_bulk.py [--rows 100000]

Prints, for each way, the time alone (the baseline) and beside a busy thread, and how much
work the busy thread got done meanwhile (millions of loop steps per second).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from engine._logschema import SCHEMA
from engine._pending import bulk_op
from engine.log import _INSERT

BATCH = 5_000


def rows(n: int) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for i in range(1, n + 1):
        h = hashlib.sha256(str(i).encode()).hexdigest()
        out.append(
            (i, h[:32], f"ctct:contact:{h[32:]}", 1, "contact.observed", 1,
             "2026-11-27T00:00:00.000000Z", os.urandom(288), os.urandom(32))
        )  # fmt: skip
    return out


def open_db(path: Path) -> sqlite3.Connection:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.executescript(SCHEMA)
    return db


def write(db: sqlite3.Connection, data: list[tuple[object, ...]], bulk: bool) -> None:
    for i in range(0, len(data), BATCH):
        part = data[i : i + BATCH]
        db.execute("BEGIN")
        if bulk:
            op = bulk_op(_INSERT, part, (7, 8))
            assert op is not None
            (db.executemany if op[2] else db.execute)(op[0], op[1])
        else:
            db.executemany(_INSERT, part)
        db.execute("COMMIT")


def busy(stop: threading.Event, done: list[int]) -> None:
    n = 0
    while not stop.is_set():
        for _ in range(1000):
            n += 1
    done.append(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    data = rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        for name, bulk in (("executemany", False), ("json_each", True)):
            for beside in (False, True):
                db = open_db(path)
                stop, done = threading.Event(), []
                other = threading.Thread(target=busy, args=(stop, done))
                t0 = time.perf_counter()
                if beside:
                    other.start()
                writer = threading.Thread(target=write, args=(db, data, bulk))
                writer.start()
                writer.join()
                secs = time.perf_counter() - t0
                stop.set()
                if beside:
                    other.join()
                count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
                db.close()
                assert count == args.rows
                where = "beside a busy thread" if beside else "alone (baseline)    "
                extra = f"; busy thread {done[0] / secs / 1e6:.0f}M steps/s" if done else ""
                print(f"{name:12s} {where}: {args.rows:,} rows in {secs:.2f}s{extra}", flush=True)


if __name__ == "__main__":
    main()
