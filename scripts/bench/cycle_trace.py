"""Diagnosis, not a benchmark: what the first sync cycle's threads do, and what the log's
writer waits for.

    .venv/bin/python scripts/bench/cycle_trace.py [--contacts 100000] [--second]
        [--incremental K [--changes 1000]] [--timeline]

Runs the initial sync of ``scripts/bench/sync.py`` (simulator in its own process, SQLite app
database, rate limits off) once (``--second``: and the cycle after it, which observes the
app's echo of every contact the first created; ``--incremental K``: then, after a settling
cycle, K incremental cycles as ``sync.py`` runs them), and prints for each phase (observe,
reconcile+execute):

* the CPU time of every thread of this process (sampled from ``/proc/self/task/*/stat``);
* the log's writer connection: how long it was busy, how long idle, and how the idle time
  splits into waiting for the event loop to take the previous job's result and the loop's
  work before it sent the next job; the longest idle stretches by the jobs around them;
  its busiest jobs;
* every statement of every connection (the log's writer, its read-only reader, the app
  database), wall and CPU time in its thread, the writes of a transaction one by one;
* with ``--timeline``, the first cycle's reconcile+execute as a timeline: when each batch's
  issue records, its outcome records and each store's writes ran (``Outbox.issue``,
  ``Outbox.record``, the sinks' ``apply``), and the time spent reading pairs and deciding.

Every aiosqlite job is timed by wrapping aiosqlite's private ``Connection._execute`` (the
same private call engine/_pending.py uses; aiosqlite is pinned), and a transaction's queued
writes by replacing ``engine._pending._run``, which runs them. The timing costs a little;
compare phases within a run, not with sync.py's figures. docs/BENCHMARKS.md (the sync
section, fifth session) reads this output.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiosqlite.core

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _simproc import SimProcess, stat_cpu_seconds

import engine._pending
import engine.cycle
from engine.bootstrap import wire
from engine.cli._demo_setup import prepare_folder
from engine.logging import configure_logging
from engine.outbox import Outbox
from engine.settings import load_settings

_jobs: list[dict[str, Any]] = []
_original = aiosqlite.core.Connection._execute
_original_run = engine._pending._run
# Every statement, each connection's: (label, when it started, wall, CPU in its thread).
_statements: list[tuple[str, float, float, float]] = []


_WRITE: Final = re.compile(
    r"(INSERT (?:OR \w+ )?INTO \S+|UPDATE \S+ SET \S+|DELETE FROM \S+)", re.IGNORECASE
)


def _head(sql: str) -> str:
    """A statement's label: a write's verb and table, a read's first 60 characters."""
    text = " ".join(sql.split())
    m = _WRITE.match(text)
    return m.group(1) if m else text[:60]


def _timed_run(raw: sqlite3.Connection, ops: list[Any], reads: list[Any]) -> list[list[Any]]:
    """engine._pending._run, each queued write and read timed on its own."""
    for sql, params, many in ops:
        w, c = time.perf_counter(), time.thread_time()
        if many:
            raw.executemany(sql, params)
        else:
            raw.execute(sql, params)
        _statements.append((_head(sql), w, time.perf_counter() - w, time.thread_time() - c))
    out = []
    for sql, params in reads:
        w, c = time.perf_counter(), time.thread_time()
        out.append(raw.execute(sql, params).fetchall())
        _statements.append((_head(sql), w, time.perf_counter() - w, time.thread_time() - c))
    return out


def _label(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    name = getattr(fn, "__name__", str(fn))
    if name in ("_run", "_timed_run"):  # engine._pending: a transaction's writes, then reads
        ops, reads = args[1], args[2]
        writes = ",".join(" ".join(op[0].split()[:3]) for op in ops)
        return f"writes [{writes[:60]}]" + (f" + {len(reads)} reads" if reads else "")
    if args and isinstance(args[0], str):
        return " ".join(args[0].split())[:60]
    return name


async def _timed(self: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    job: dict[str, Any] = {"conn": id(self), "label": _label(fn, args)}
    job["submit"] = time.perf_counter()

    def run() -> Any:
        job["start"] = time.perf_counter()
        cpu = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            job["end"] = time.perf_counter()
            if not job["label"].startswith("writes ["):  # (those are timed one by one)
                label = _head(args[0]) if args and isinstance(args[0], str) else job["label"]
                wall = job["end"] - job["start"]
                _statements.append((label, job["start"], wall, time.thread_time() - cpu))

    try:
        return await _original(self, run)
    finally:
        job["resume"] = time.perf_counter()
        _jobs.append(job)


# (label, start, end) of the reconciler's steps, when --timeline asks for them.
_spans: list[tuple[str, float, float]] = []


def _span_async(owner: Any, name: str, label: str) -> None:
    """Record every call of the coroutine method ``owner.name`` as a span."""
    original = getattr(owner, name)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            _spans.append((label, t0, time.perf_counter()))

    setattr(owner, name, timed)


def _span_sync(module: Any, name: str, label: str) -> None:
    original = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _spans.append((label, t0, time.perf_counter()))

    setattr(module, name, timed)


def _span_pairs() -> None:
    """Time each chunk of ``touched_pairs`` as the cycle reads it (the pairs' reads and
    decoding, not the deciding between chunks)."""
    original = engine.cycle.touched_pairs

    async def timed(conn: Any, since: int | None) -> Any:
        t0 = time.perf_counter()
        async for chunk in original(conn, since):
            _spans.append(("read pairs", t0, time.perf_counter()))
            yield chunk
            t0 = time.perf_counter()

    engine.cycle.touched_pairs = timed  # type: ignore[assignment]


def trace_steps(w: Any) -> None:
    _span_async(Outbox, "issue", "issue")
    _span_async(Outbox, "record", "record")
    _span_async(Outbox, "unsettled", "read unsettled")
    _span_sync(engine.cycle, "reconcile", "decide")
    _span_pairs()
    for store, sink in w.engine.outbox.sinks.items():
        _span_async(sink, "apply", f"{store} writes")


def timeline(a: float, b: float) -> None:
    spans = [s for s in _spans if a <= s[1] <= b]
    totals: collections.Counter[str] = collections.Counter()
    for label, t0, t1 in spans:
        totals[label] += t1 - t0
    print(f"== reconcile+execute as a timeline ({b - a:.2f} s; s from its start)")
    print("   sums: " + ", ".join(f"{k} {v:.2f} s" for k, v in totals.most_common()))
    for label, t0, t1 in sorted(spans, key=lambda s: s[1]):
        if label in ("issue", "record") or label.endswith(" writes"):
            print(f"   {t0 - a:7.3f} -> {t1 - a:7.3f}  {t1 - t0:6.3f}  {label}")


class _ThreadCpu:
    """Each thread's CPU time, sampled every 50 ms."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.names: dict[int, str] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            snap: dict[int, float] = {}
            for tid in os.listdir("/proc/self/task"):
                try:
                    snap[int(tid)] = stat_cpu_seconds(f"/proc/self/task/{tid}/stat")
                except OSError:
                    continue  # the thread ended
            self.samples.append((time.perf_counter(), snap))
            time.sleep(0.05)

    def name_threads(self) -> None:
        self.names.update({t.native_id or 0: t.name for t in threading.enumerate()})

    def between(self, a: float, b: float) -> dict[str, float]:
        first = min(self.samples, key=lambda s: abs(s[0] - a))[1]
        last = min(self.samples, key=lambda s: abs(s[0] - b))[1]
        out = {}
        for tid, cpu in last.items():
            used = cpu - first.get(tid, 0.0)
            if used >= 0.05:
                out[self.names.get(tid, str(tid))] = round(used, 2)
        return out


def report(name: str, a: float, b: float, writer: int, cpu: _ThreadCpu) -> None:
    jobs = sorted(
        (j for j in _jobs if j["conn"] == writer and "start" in j and a <= j["start"] <= b),
        key=lambda j: j["start"],
    )
    busy = sum(j["end"] - j["start"] for j in jobs)
    print(f"== {name}: {b - a:.2f} s")
    print(f"   CPU by thread: {cpu.between(a, b)}")
    print(f"   the log's writer: {len(jobs)} jobs, busy {busy:.2f} s, idle {b - a - busy:.2f} s")
    resume_wait = loop_work = 0.0
    gaps: collections.Counter[tuple[str, str]] = collections.Counter()
    for prev, cur in itertools.pairwise(jobs):
        gap = cur["start"] - prev["end"]
        if gap <= 0:
            continue
        before_submit = max(0.0, min(cur["submit"], cur["start"]) - prev["end"])
        waiting = max(0.0, min(prev["resume"], cur["submit"]) - prev["end"])
        resume_wait += waiting
        loop_work += before_submit - waiting
        gaps[(prev["label"], cur["label"])] += gap
    print(
        f"   idle: {resume_wait:.2f} s before the loop took the previous job's result, "
        f"{loop_work:.2f} s of the loop's work before it sent the next"
    )
    for (after, before), gap in gaps.most_common(6):
        print(f"   {gap:6.2f} s idle after  {after}\n            before {before}")
    by_label: collections.Counter[str] = collections.Counter()
    for j in jobs:
        by_label[j["label"]] += j["end"] - j["start"]
    for label, secs in by_label.most_common(6):
        print(f"   {secs:6.2f} s busy in {label}")
    per: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for label, at, wall, used in _statements:
        if a <= at <= b:
            row = per[label]
            row[0] += 1
            row[1] += wall
            row[2] += used
    print("   statements, every connection (wall / CPU in its thread, count):")
    for label, (count, wall, used) in sorted(per.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"   {wall:6.2f} / {used:5.2f} s {int(count):6d}x  {label}")


async def main_async(
    n: int, second: bool, incremental: int, changes: int, show_timeline: bool = False
) -> None:
    configure_logging(level="warning")
    aiosqlite.core.Connection._execute = _timed  # type: ignore[method-assign]
    engine._pending._run = _timed_run
    cpu = _ThreadCpu()
    print(f"starting a simulator with {n:,} contacts ...", flush=True)
    sim = SimProcess(n, lists=6)
    try:
        access = await sim.access()
        with tempfile.TemporaryDirectory() as tmp:
            config = await prepare_folder(
                Path(tmp) / "ccsync",
                access,
                app_contacts=0,
                tracking=False,
                overlap_seconds=1,
                daily_budget=10_000_000,
            )
            async with wire(load_settings(config)) as w:
                cpu.name_threads()
                if show_timeline:
                    trace_steps(w)
                _jobs.clear()
                t0 = time.perf_counter()
                first = await w.engine.cycle()
                t1 = time.perf_counter()
                cpu.name_threads()
                writer = id(w.engine.log.connection)
                if second or incremental:
                    t2 = time.perf_counter()
                    echo = await w.engine.cycle()
                    t3 = time.perf_counter()
                steps = []
                if incremental:
                    await w.engine.cycle()  # settles what the second cycle wrote
                for _ in range(incremental):
                    await sim.admin("POST", "world/step", {"n": changes})
                    t4 = time.perf_counter()
                    inc = await w.engine.cycle()
                    steps.append((t4, time.perf_counter(), inc))
        print(f"first cycle: {t1 - t0:.2f} s, {first.observed.get('ctct.contacts', 0):,} contacts")
        observe, rest = first.durations["observe"], first.durations["reconcile_execute"]
        report("observe", t0, t0 + observe, writer, cpu)
        report("reconcile+execute", t1 - rest, t1, writer, cpu)
        if show_timeline:
            timeline(t1 - rest, t1)
        if second:
            print(f"second cycle: {t3 - t2:.2f} s, observed {echo.observed}")
            observe, rest = echo.durations["observe"], echo.durations["reconcile_execute"]
            report("second cycle: observe", t2, t2 + observe, writer, cpu)
            report("second cycle: reconcile+execute", t3 - rest, t3, writer, cpu)
        for k, (a, b, inc) in enumerate(steps, 1):
            print(f"incremental cycle {k}: {b - a:.2f} s, observed {inc.observed}")
            observe = inc.durations["observe"]
            report(f"incremental {k}: observe", a, a + observe, writer, cpu)
            report(f"incremental {k}: reconcile+execute", a + observe, b, writer, cpu)
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--second", action="store_true", help="trace the second cycle too")
    parser.add_argument(
        "--incremental",
        type=int,
        default=0,
        metavar="K",
        help="then trace K incremental cycles, each after --changes world changes",
    )
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print the first cycle's reconcile+execute as a timeline of its steps",
    )
    args = parser.parse_args()
    asyncio.run(
        main_async(args.contacts, args.second, args.incremental, args.changes, args.timeline)
    )


if __name__ == "__main__":
    main()
