"""Append throughput of the event log, against raw sqlite3 and the eventsourcing library.

    .venv/bin/python scripts/bench/log_append.py [--events 1000000] [--batch 500]

Three columns, each measured in its own child process (so each peak RSS is its own), on the
very same rows (tracking events of 50,000 contacts, ~370-byte payloads, batches of 500):

* ``EventLog.append``: everything the log does per batch (dedupe lookup, stream versions,
  encoding, the hash chain, one transaction), timed end to end;
* raw ``sqlite3.executemany`` of the finished rows (payload and hash precomputed, untimed)
  into the same schema, indexes included, with the log's pragmas (WAL, synchronous=NORMAL,
  wal_autocheckpoint, cache_size), one transaction per batch: the floor we compare to;
* the ``eventsourcing`` library's SQLite application recorder (``pip install -e '.[bench]'``),
  ``insert_events`` per batch: a peer.

Generating the test events is never timed. The target is EventLog >= 50% of raw, RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _logbench import Stopwatch, batches, best, report, run_child, table

from engine._logschema import GENESIS, SCHEMA, row_hash
from engine.codec import encode_event
from engine.events import stream_of
from engine.log import WAL_CHECKPOINT_PAGES, WRITER_CACHE_KIB, EventLog

TS = "2024-03-01T09:00:00.000000Z"


async def measure_eventlog(path: Path, total: int, size: int) -> None:
    watch = Stopwatch()
    async with await EventLog.open(path) as log:
        for batch in batches(total, size):
            with watch:
                await log.append(batch)
        assert (await log.head()).position == total
    report(watch.total, total, watch.cpu)


def measure_raw(path: Path, total: int, size: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    # The log's own settings, so the ratio measures the log's work, not a pragma.
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    conn.executescript(SCHEMA)
    insert = (
        "INSERT INTO events (position, event_id, stream, version, type, schema_version, "
        "recorded_at, payload, hash) VALUES (?,?,?,?,?,?,?,?,?)"
    )
    versions: dict[str, int] = {}
    pos, prev = 0, GENESIS
    watch = Stopwatch()
    for batch in batches(total, size):
        rows = []
        for e in batch:
            pos += 1
            stream = stream_of(e.event)
            version = versions[stream] = versions.get(stream, 0) + 1
            payload = encode_event(e.event)
            prev = row_hash(prev, pos, e.id, stream, version, "tracking.recorded", 2, TS, payload)
            rows.append((pos, e.id, stream, version, "tracking.recorded", 2, TS, payload, prev))
        with watch:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, rows)
            conn.execute("COMMIT")
    conn.close()
    report(watch.total, total, watch.cpu)


def measure_eventsourcing(path: Path, total: int, size: int) -> None:
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    datastore = SQLiteDatastore(str(path), originator_id_type="text")
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    versions: dict[str, int] = {}
    watch = Stopwatch()
    for batch in batches(total, size):
        stored = []
        for e in batch:
            stream = stream_of(e.event)
            version = versions[stream] = versions.get(stream, 0) + 1
            stored.append(StoredEvent(stream, version, "tracking.recorded", encode_event(e.event)))
        with watch:
            recorder.insert_events(stored)
    report(watch.total, total, watch.cpu, version=_es_version())


def _es_version() -> str:
    from importlib.metadata import version

    return version("eventsourcing")


def child(kind: str, path: Path, total: int, size: int) -> None:
    if kind == "eventlog":
        asyncio.run(measure_eventlog(path, total, size))
    elif kind == "raw":
        measure_raw(path, total, size)
    else:
        measure_eventsourcing(path, total, size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=1, help="runs per column; the best counts")
    ap.add_argument("--no-peer", action="store_true", help="skip the eventsourcing column")
    ap.add_argument("--child", choices=["eventlog", "raw", "eventsourcing"], help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path, args.events, args.batch)
        return

    kinds = ["raw", "eventlog"] + ([] if args.no_peer else ["eventsourcing"])
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="ccsync-bench-") as tmp:
        for _ in range(args.repeat):
            for kind in kinds:  # interleaved, so a noisy neighbour hurts every column alike
                path = Path(tmp) / f"{kind}.db"
                argv = ["--child", kind, "--path", str(path)]
                argv += ["--events", str(args.events), "--batch", str(args.batch)]
                runs[kind].append(run_child(__file__, argv))
                for p in Path(tmp).glob(f"{path.name}*"):
                    os.unlink(p)
    results = {k: best(v) for k, v in runs.items()}
    labels = {
        "raw": "raw sqlite3 executemany",
        "eventlog": "ccsync EventLog.append",
        "eventsourcing": f"eventsourcing {results.get('eventsourcing', {}).get('version')} SQLite",
    }
    table(
        f"append {args.events:,} events in batches of {args.batch}, best of {args.repeat} "
        f"({os.cpu_count()} CPUs)",
        [(labels[k], results[k]) for k in kinds],
    )
    if "eventsourcing" in results:
        ours = results["eventlog"]["events"] / results["eventlog"]["seconds"]
        peer = results["eventsourcing"]["events"] / results["eventsourcing"]["seconds"]
        print(f"EventLog / eventsourcing: {ours / peer:.2f}x")


if __name__ == "__main__":
    main()
