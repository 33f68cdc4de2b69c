"""Benchmark: the contacts projection's upsert of contacts whose email a change kept, with and
without assigning the email (projections.runner, a8319da).

SQLite rewrites an index entry whenever an UPDATE assigns one of its columns, changed or not.
This builds ``p_contacts`` (the projection's own schema) with ``--rows`` contacts, then upserts
``--batch`` random existing contacts per transaction, as an incremental cycle's observation
does, alternating the two statements; the full one (it assigns the email) is the baseline.

    .venv/bin/python scripts/bench/contacts_upsert.py [--rows 1000000] [--batch 2000] [--rounds 6]

Prints each statement's median time for the upsert and for its COMMIT.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from projections.runner import _CONTACTS_UPSERT, _CONTACTS_UPSERT_SAME_EMAIL
from projections.schema import PROJECTION_SCHEMA


def build(path: Path, rows: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(PROJECTION_SCHEMA)
    rnd = random.Random(1)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO p_contacts (store, store_id, email, position, state) VALUES (?,?,?,?,?)",
        (
            (
                "ctct",
                str(uuid.UUID(int=rnd.getrandbits(128))),
                f"user{rnd.getrandbits(40)}@example.org",
                i,
                rnd.randbytes(480),  # a projected state is about this long
            )
            for i in range(rows)
        ),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.db"
        print(f"building p_contacts with {args.rows:,} rows ...", flush=True)
        build(path, args.rows)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA cache_size = -32768")  # the log writer's (engine.log)
        picked = db.execute(
            "SELECT store_id, email FROM p_contacts ORDER BY random() LIMIT ?",
            (args.batch * args.rounds * 2,),
        ).fetchall()
        position = db.execute("SELECT max(position) FROM p_contacts").fetchone()[0]
        ways = {"assigns the email (baseline)": _CONTACTS_UPSERT,
                "keeps the email": _CONTACTS_UPSERT_SAME_EMAIL}  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for k in range(args.rounds * 2):
            name = list(ways)[k % 2]  # alternating
            rows = []
            for sid, email in picked[k * args.batch : (k + 1) * args.batch]:
                position += 1
                rows.append(("ctct", sid, email, position, os.urandom(480)))
            t0 = time.perf_counter()
            db.execute("BEGIN")
            db.executemany(ways[name], rows)
            t1 = time.perf_counter()
            db.execute("COMMIT")
            times[name].append((t1 - t0, time.perf_counter() - t1))
        db.close()
    print(f"upserting {args.batch:,} random existing contacts per transaction, {args.rounds} each:")
    for name, got in times.items():
        upsert = statistics.median(t for t, _ in got) * 1000
        commit = statistics.median(c for _, c in got) * 1000
        print(f"  {name:30s} upsert {upsert:6.1f} ms   commit {commit:6.1f} ms")


if __name__ == "__main__":
    main()
