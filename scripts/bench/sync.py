"""Benchmark: the whole sync, simulator -> log -> projections -> SQLite app database.

1. Initial sync of N contacts (rate limits off), end to end in one ccsync cycle, beside a bare
   aiohttp + msgspec + sqlite3 loop that only stores the raw pages, measured in the same run.
2. Incremental sync after 1% of the contacts change (``--changes``), three times over
   (``--incremental-runs``): each cycle's time and API requests, and the median.
3. Peak memory (RSS high-water of this process, which holds no simulator).

    .venv/bin/python scripts/bench/sync.py [--contacts 100000] [--skip-baseline]

The simulator runs in its own process (scripts/bench/_simproc.py). Run it for 100,000 and for
1,000,000 contacts to compare the incremental cost at the two sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _simproc import SimProcess

from engine.bootstrap import Wired, wire
from engine.cli._demo_setup import prepare_folder
from engine.events import PageObserved
from engine.log import EventLog
from engine.logging import configure_logging
from engine.settings import load_settings

INCLUDE = "custom_fields,list_memberships,phone_numbers,street_addresses,notes,taggings"


class _Next(msgspec.Struct):
    href: str


class _Links(msgspec.Struct):
    next: _Next | None = None


class _Page(msgspec.Struct):
    contacts: list[msgspec.Raw] = []
    _links: _Links | None = None


async def baseline(sim: SimProcess, token: str, db: Path) -> tuple[int, float]:
    """GET every page, decode with msgspec, store each raw page in SQLite: nothing else."""
    decoder = msgspec.json.Decoder(_Page)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE pages (n INTEGER PRIMARY KEY, body BLOB)")
    count, n = 0, 0
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        url: str | None = f"{sim.base_url}/contacts?status=all&include={INCLUDE}&limit=500"
        while url is not None:
            async with session.get(url) as resp:
                body = await resp.read()
            page = decoder.decode(body)
            conn.execute("INSERT INTO pages VALUES (?, ?)", (n, body))
            conn.commit()
            n += 1
            count += len(page.contacts)
            url = (
                f"{sim.root_url}{page._links.next.href}"
                if page._links and page._links.next
                else None
            )
    conn.close()
    return count, time.perf_counter() - t0


async def replay_reads(
    sim: SimProcess, token: str, log: EventLog, run_id: str, since: int
) -> tuple[int, float]:
    """Send the cycle's Constant Contact reads again (the requests its page.observed events
    record) and time the simulator's answers: the share of the cycle that is the server's, not
    ccsync's (time-filtered reads are answered from the simulator's time index)."""
    requests = [
        r.event.request
        async for r in log.read(since + 1)
        if isinstance(r.event, PageObserved)
        and r.event.run_id == run_id
        and r.event.request.startswith("GET /v3/")
    ]
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for req in requests:
            async with session.get(sim.root_url + req.removeprefix("GET ")) as resp:
                await resp.read()
    return len(requests), time.perf_counter() - t0


def work_folder(tmp: str, keep: Path | None) -> Path:
    """The run's folder: the temporary one, or ``keep`` (--keep), which must not exist yet."""
    if keep is None:
        return Path(tmp)
    if keep.exists():
        raise SystemExit(f"--keep {keep}: it exists already")
    keep.mkdir(parents=True)
    return keep


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, every thread, so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def incremental(sim: SimProcess, token: str, w: Wired, changes: int, k: int) -> float:
    """One incremental cycle after ``changes`` world changes: prints its time, commands, API
    requests and the requests by endpoint; returns its time."""
    events = await sim.admin("POST", "world/step", {"n": changes})
    await sim.admin("DELETE", "requests")
    touched = {e["contact_id"] for e in events["events"] if e.get("contact_id")}
    before_inc = (await w.engine.log.head()).position
    t0 = time.perf_counter()
    inc = await w.engine.cycle()
    isecs = time.perf_counter() - t0
    print(
        f"ccsync    incremental {k} after {changes:,} changes ({len(touched):,} contacts"
        f" touched): {isecs:.2f}s, commands {inc.commands}, "
        f"API requests {inc.api_requests} "
        f"({inc.api_requests / max(len(touched), 1) * 1000:.1f} per 1,000 changed)",
        flush=True,
    )
    print(f"          phases: { {k: round(v, 2) for k, v in inc.durations.items()} }")
    print(f"          observed: {inc.observed}")
    served = await replay_reads(sim, token, w.engine.log, inc.run_id, before_inc)
    print(
        f"          of which the simulator answering the cycle's "
        f"{served[0]} Constant Contact reads (replayed, raw): {served[1]:.2f}s"
    )
    by_endpoint = await sim.admin("GET", "requests")
    for endpoint, count in sorted(by_endpoint.items(), key=lambda kv: -kv[1]):
        if "/__admin/" not in endpoint:
            print(f"          {count:5d}  {endpoint}")
    return isecs


async def main_async(args: argparse.Namespace) -> None:
    configure_logging(level="warning")
    n = args.contacts
    print(
        f"starting a simulator with {n:,} contacts (look-back overlap {args.overlap_seconds:g} s)"
        " ...",
        flush=True,
    )
    sim = SimProcess(n, lists=6)
    try:
        access = await sim.access()
        with tempfile.TemporaryDirectory() as tmp:
            root = work_folder(tmp, args.keep)
            if not args.skip_baseline:
                count, secs = await baseline(sim, access.access_token, Path(tmp) / "raw.db")
                base_rate = count / secs
                print(
                    f"baseline  aiohttp+msgspec+sqlite3 raw pages: {count:,} contacts in "
                    f"{secs:.2f}s = {base_rate:,.0f} contacts/s",
                    flush=True,
                )
            config = await prepare_folder(
                root / "ccsync",
                access,
                app_contacts=0,
                tracking=False,
                overlap_seconds=args.overlap_seconds,
                # (Incremental cycles of 1% at 1,000,000 spend a real key's 10,000 a day.)
                daily_budget=10_000_000,
            )
            async with wire(load_settings(config)) as w:
                cpu0, sim0 = cpu_seconds(), sim.cpu_seconds()
                t0 = time.perf_counter()
                first = await w.engine.cycle()
                secs = time.perf_counter() - t0
                cpu, sim_cpu = cpu_seconds() - cpu0, sim.cpu_seconds() - sim0
                seen = first.observed.get("ctct.contacts", 0)
                rate = seen / secs
                line = (
                    f"ccsync    initial sync: {seen:,} contacts in {secs:.2f}s "
                    f"= {rate:,.0f} contacts/s"
                )
                if not args.skip_baseline:
                    line += f"  ({rate / base_rate:.0%} of baseline)"
                print(line, flush=True)
                print(f"          phases: { {k: round(v, 2) for k, v in first.durations.items()} }")
                cores = os.cpu_count() or 1
                print(
                    f"          CPU: ccsync {cpu:.2f}s ({cpu / secs:.2f} cores), simulator "
                    f"{sim_cpu:.2f}s, of {cores} cores x {secs:.2f}s = {cores * secs:.2f}s"
                )
                print(f"          peak RSS after the initial sync: {rss_mb():.0f} MB", flush=True)
                print(
                    f"          commands: {first.commands}, failed {first.failed}, "
                    f"API requests {first.api_requests}",
                    flush=True,
                )
                second = await w.engine.cycle()  # observes what the first wrote to the app
                print(f"          second cycle observed: {second.observed}")
                print(
                    f"          second cycle: {sum(second.durations.values()):.2f}s, "
                    f"commands {second.commands}",
                    flush=True,
                )
                print(f"          peak RSS so far: {rss_mb():.0f} MB", flush=True)
                # Back-to-back cycles re-read, through the look-back overlap, the rows the
                # previous cycle wrote; one cycle with nothing new brings the run to the steady
                # state a daemon is in, so the incremental cycle below costs what changed.
                settle = await w.engine.cycle()
                print(
                    f"          settling cycle: {sum(settle.durations.values()):.2f}s, "
                    f"commands {settle.commands}, observed {settle.observed}",
                    flush=True,
                )
                changes = args.changes or max(1, n // 100)
                times: list[float] = []
                for k in range(1, args.incremental_runs + 1):
                    times.append(await incremental(sim, access.access_token, w, changes, k))
                if len(times) > 1:
                    print(
                        f"ccsync    incremental, {len(times)} runs: median "
                        f"{statistics.median(times):.2f}s, "
                        f"min {min(times):.2f}s, max {max(times):.2f}s",
                        flush=True,
                    )
            print(f"peak RSS: {rss_mb():.0f} MB", flush=True)
    finally:
        sim.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--contacts", type=int, default=100_000)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the run's files in this new folder (the log is DIR/ccsync/ccsync.db), for "
        "read-only measurements afterwards (daemon_metrics.py --log); its simulator ends "
        "with the run",
    )
    p.add_argument(
        "--changes",
        type=int,
        help="world changes before the incremental cycle (default: 1%% of --contacts)",
    )
    p.add_argument(
        "--incremental-runs",
        type=int,
        default=3,
        help="incremental cycles, each after its own changes (default 3; one cycle's time "
        "varies with how much of the WAL the cycle before left to copy)",
    )
    p.add_argument(
        "--overlap-seconds",
        type=float,
        default=1.0,
        help="look-back of incremental fetches (default 1 s here, ccsync's own default 300 s: "
        "the cycles here run back to back, and with 300 s each one re-reads every row the "
        "cycles of the last five minutes wrote, the initial sync's 100,000 included, where a "
        "daemon's cycles are 900 s apart)",
    )
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
