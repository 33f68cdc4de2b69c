"""Shared by log_append.py and log_replay.py: the benchmark's events and child-process plumbing.

Events are tracking activities (the most numerous event in a real log) of 50,000 contacts, so
streams grow to many versions, with payloads of about 300 bytes. They are generated batch by
batch, so no measurement ever holds the whole run in memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.events import TrackingRecorded, content_id
from engine.log import NewEvent
from engine.model import TRACKING_KINDS, TrackingActivity

__all__ = [
    "BASE",
    "Stopwatch",
    "batches",
    "best",
    "make_event",
    "peak_rss_mb",
    "report",
    "run_child",
    "table",
]

BASE = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CONTACTS = 50_000


def make_event(i: int) -> TrackingRecorded:
    """The i-th event: deterministic, so every measurement stores the very same rows."""
    c = i % CONTACTS
    kind = TRACKING_KINDS[i % len(TRACKING_KINDS)]
    when = BASE + timedelta(seconds=i)
    contact_id = f"6f1c{c:08x}-3b1e-11ef-9c2a-0242ac120002"
    details = {"link_url": f"https://example.org/appeal/{i % 97}"} if kind == "click" else {}
    activity = TrackingActivity(
        contact_id=contact_id,
        email=f"member.{c}@example.org",
        campaign_activity_id=f"a1b2{i % 40:08x}-0000-4000-8000-000000000000",
        kind=kind,
        created_time=when,
        details=details,
    )
    return TrackingRecorded(store="ctct", key=contact_id, activity=activity)


def batches(total: int, size: int) -> Iterator[list[NewEvent]]:
    """``total`` events in batches of ``size``, each with its producer's content id."""
    for start in range(0, total, size):
        events = [make_event(i) for i in range(start, min(start + size, total))]
        yield [NewEvent(content_id(e), e) for e in events]


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: list[str]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter, so each peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, script, *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def report(seconds: float, events: int, cpu: float, **extra: Any) -> None:
    """A child's last line: what the parent reads."""
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "events": events, "rss_mb": peak_rss_mb(), **extra}
        )
    )


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (the others lost time to neighbours), with the worst RSS."""
    fastest = dict(min(runs, key=lambda r: r["seconds"]))
    fastest["cpu"] = min(r["cpu"] for r in runs)
    fastest["rss_mb"] = max(r["rss_mb"] for r in runs)
    fastest["runs"] = len(runs)
    return fastest


def table(title: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Rates by wall clock (best run) and by CPU time, each against the first row."""
    base_wall = rows[0][1]["events"] / rows[0][1]["seconds"]
    base_cpu = rows[0][1]["events"] / rows[0][1]["cpu"]
    print(title)
    print(f"{'':30}{'events/s':>11}{'ratio':>7}{'per CPU-s':>11}{'ratio':>7}{'peak RSS':>11}")
    for label, r in rows:
        wall = r["events"] / r["seconds"]
        cpu = r["events"] / r["cpu"]
        print(
            f"{label:30}{wall:>11,.0f}{wall / base_wall:>7.0%}{cpu:>11,.0f}"
            f"{cpu / base_cpu:>7.0%}{r['rss_mb']:>8.1f} MB"
        )


class Stopwatch:
    """Accumulates only the timed sections (generating test data is excluded), wall and CPU.

    CPU time is the whole process's (all threads), so it counts aiosqlite's worker too.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.cpu = 0.0
        self._t0 = 0.0
        self._c0 = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.total += time.perf_counter() - self._t0
        self.cpu += time.process_time() - self._c0
