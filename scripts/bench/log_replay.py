"""Replay throughput of the event log: read, decode and fold, against a raw sqlite3 scan.

    .venv/bin/python scripts/bench/log_replay.py [--events 1000000] [--log PATH]

Builds a log of N events with EventLog (the same events as log_append.py; not timed), or
reuses ``--log PATH`` if it already holds N events, then measures, each in its own child
process (so each peak RSS is its own):

* raw: ``sqlite3`` cursor over ``SELECT payload ... ORDER BY position`` (fetchmany of 2,000),
  one ``msgspec.json.Decoder(Event)`` decode per row, then the fold: the floor we compare to;
* ``EventLog.read()``: the log's streaming read (gap check, tag and schema-version check,
  upcasting, the Recorded envelope with its recorded_at), then the same fold.

The fold is a small projection (count per activity kind, last activity per contact).
The target is EventLog >= 50% of raw, peak RSS < 100 MB.
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

import msgspec
from _logbench import Stopwatch, batches, best, report, run_child, table

from engine.events import Event, EventBase, TrackingRecorded
from engine.log import EventLog


class Fold:
    """The projection both columns compute: counts per kind, last activity per contact."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.last: dict[str, object] = {}

    def __call__(self, event: EventBase) -> None:
        if isinstance(event, TrackingRecorded):
            a = event.activity
            self.kinds[a.kind] = self.kinds.get(a.kind, 0) + 1
            self.last[a.contact_id] = a.created_time


async def build(path: Path, total: int) -> None:
    async with await EventLog.open(path) as log:
        head = (await log.head()).position
        if head == total:
            return
        if head:
            raise SystemExit(f"{path} holds {head} events, not {total}: give another --log")
        for batch in batches(total, 500):
            await log.append(batch)


def measure_raw(path: Path) -> None:
    decoder = msgspec.json.Decoder(Event)
    fold = Fold()
    n = 0
    conn = sqlite3.connect(path)
    with Stopwatch() as watch:
        cur = conn.execute("SELECT payload FROM events ORDER BY position")
        while rows := cur.fetchmany(2000):
            for (payload,) in rows:
                fold(decoder.decode(payload))
            n += len(rows)
    conn.close()
    report(watch.total, n, watch.cpu, contacts=len(fold.last))


async def measure_eventlog(path: Path) -> None:
    fold = Fold()
    n = 0
    async with await EventLog.open(path, writer=False) as log:
        with Stopwatch() as watch:
            async for r in log.read():
                fold(r.event)
                n += 1
    report(watch.total, n, watch.cpu, contacts=len(fold.last))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--log", type=Path, help="build (or reuse) the log here; kept afterwards")
    ap.add_argument("--repeat", type=int, default=3, help="runs per column; the best counts")
    ap.add_argument("--child", choices=["build", "raw", "eventlog"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "build":
        asyncio.run(build(args.log, args.events))
        print("{}")
        return
    if args.child == "raw":
        measure_raw(args.log)
        return
    if args.child == "eventlog":
        asyncio.run(measure_eventlog(args.log))
        return
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "eventlog": []}
    with tempfile.TemporaryDirectory(prefix="ccsync-bench-") as tmp:
        path = args.log or Path(tmp) / "replay.db"
        run_child(__file__, ["--child", "build", "--log", str(path), "--events", str(args.events)])
        for _ in range(args.repeat):
            for kind, out in runs.items():  # interleaved: a noisy neighbour hurts both alike
                out.append(run_child(__file__, ["--child", kind, "--log", str(path)]))
    results = {k: best(v) for k, v in runs.items()}
    for r in results.values():
        assert r["events"] == args.events, r
    table(
        f"replay {args.events:,} events: read, decode, fold; best of {args.repeat} "
        f"({os.cpu_count()} CPUs)",
        [
            ("raw sqlite3 scan + msgspec", results["raw"]),
            ("ccsync EventLog.read", results["eventlog"]),
        ],
    )


if __name__ == "__main__":
    main()
