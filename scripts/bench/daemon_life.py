"""Benchmark: what a daemon's cycle costs as the daemon ages.

A daemon runs a cycle every 15 minutes for months. What a cycle costs must follow what changed
since the one before, not the age of the log: a cost that grows with the history (settled
commands, tracking records, campaigns, runs) is invisible in a benchmark of a few cycles and
found only by living that history. This runs ``--cycles`` cycles of one daemon against the
simulator's living account (in a process of its own) and the sample SQLite app:

* before each cycle, ``--changes`` changes in Constant Contact (profile edits, list joins and
  leaves, opt-outs, sign-ups, deletes, opens of the newest campaign), ``--app-changes`` in the
  app (renames, new addresses, opt-outs, list changes, new contacts), and every
  ``--campaign-every`` cycles a campaign sent to 500 contacts, with its sends, opens, clicks,
  bounces, forwards and opt-outs;
* the simulator's clock and the engine's move ``--minutes`` a cycle, so that tracking's daily
  rechecks and the backoff of failed commands happen as they would;
* after each cycle, the daemon's own end-of-cycle measurement for /metrics.

The baseline, measured in the same run, is the daemon when young: the first ``--window``
cycles after the initial sync and one settling cycle. It prints the medians of that window and
of the last one side by side (cycle time, CPU, the end-of-cycle measurement, API requests,
events and commands) and their ratio, and the phases of each. It exits 1 if the old daemon's
median API requests or events per cycle exceed the young one's by more than ``--max-growth``
(counts, not times: they do not depend on the machine's load).

    .venv/bin/python scripts/bench/daemon_life.py [--contacts 20000] [--cycles 960]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _simproc import SimProcess
from sync import cpu_seconds, rss_mb, work_folder

from adapters.appdb.sample import change_sample_app
from engine._metrics import DaemonMetrics
from engine.bootstrap import Wired, wire
from engine.cli._demo_setup import prepare_folder
from engine.cycle import CycleSummary
from engine.errors import CcsyncError
from engine.log import EventLog
from engine.logging import configure_logging
from engine.settings import Settings, load_settings

# What changes in Constant Contact between cycles: everything the living account does but
# send campaigns, which come every --campaign-every cycles.
_CHANGES = ["unsubscribe", "contact_edit", "account_edit", "join_list", "leave_list", "sign_up",
            "delete", "open"]  # fmt: skip


class Cycle(msgspec.Struct, kw_only=True):
    """One cycle's figures."""

    seconds: float
    cpu: float
    measure: float  # the daemon's end-of-cycle measurement for /metrics
    requests: int
    events: int
    commands: int
    phases: dict[str, float]


def _median(cycles: list[Cycle], attr: str) -> float:
    return statistics.median(float(getattr(c, attr)) for c in cycles)


def _phases(cycles: list[Cycle]) -> dict[str, float]:
    keys = {k for c in cycles for k in c.phases}
    return {k: statistics.median(c.phases.get(k, 0.0) for c in cycles) for k in sorted(keys)}


def rss_now_mb() -> float:
    """This process's resident memory now (the peak only ever grows: a leak and a one-off
    peak look alike in it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def progress(cycles: list[Cycle], args: argparse.Namespace, log: Path) -> None:
    recent = cycles[-args.progress :]
    print(
        f"  cycle {len(cycles):5d} (day {len(cycles) * args.minutes / 1440:5.1f}):"
        f" median {_median(recent, 'seconds'):.3f}s,"
        f" {_median(recent, 'requests'):.0f} requests,"
        f" {_median(recent, 'events'):.0f} events;"
        f" log {log.stat().st_size / 1e6:.1f} MB, RSS {rss_now_mb():.0f} MB"
        f" (peak {rss_mb():.0f} MB)",
        flush=True,
    )


class SimTime:
    """The sync's clock: the simulator's, read once each time the benchmark moves it (the
    engine, the log and the app adapter all read this)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    async def advance(self, sim: SimProcess, seconds: float) -> None:
        moved = await sim.admin("POST", "clock/advance", {"seconds": seconds})
        self.now = datetime.fromisoformat(moved["now"])


async def after_faults(sim: SimProcess, w: Wired, clock: SimTime) -> bool:
    """Faults off, cycles hours apart (past every backoff) until one has nothing to do, then a
    full compare: after a life of faults, the stores must agree. Returns whether they do."""
    fired = (await sim.admin("GET", "faults"))["fired"]
    print(f"faults answered: {fired}")
    await sim.admin("PUT", "faults", {})
    for _ in range(6):
        await clock.advance(sim, 7 * 3600)
        if not (await w.engine.cycle()).commands:
            break
    full = await w.engine.cycle(full_compare=True)
    print(f"full compare after the faults: commands {full.commands}, failed {full.failed}")
    return not full.commands and not full.failed


def report(young: list[Cycle], old: list[Cycle], max_growth: float) -> bool:
    """Print both windows side by side; return whether the counts stayed within max_growth."""
    rows = (
        ("cycle time (s)", "seconds", "{:.3f}"),
        ("CPU (s)", "cpu", "{:.3f}"),
        ("end-of-cycle measurement (s)", "measure", "{:.4f}"),
        ("API requests", "requests", "{:.0f}"),
        ("events written", "events", "{:.0f}"),
        ("commands issued", "commands", "{:.0f}"),
    )
    print(f"\n{'median per cycle':30} {'young (baseline)':>17} {'old':>10} {'old/young':>10}")
    ok = True
    for label, attr, fmt in rows:
        a, b = _median(young, attr), _median(old, attr)
        ratio = b / a if a else float("inf") if b else 1.0
        flag = ""
        if attr in ("requests", "events") and ratio > max_growth:
            ok, flag = False, f"  GROWS (over {max_growth:g}x)"
        print(f"{label:30} {fmt.format(a):>17} {fmt.format(b):>10} {ratio:>9.2f}x{flag}")
    print("phases (s, median):")
    pa, pb = _phases(young), _phases(old)
    for k in sorted(pa.keys() | pb.keys()):
        print(f"  {k:28} {pa.get(k, 0.0):>17.3f} {pb.get(k, 0.0):>10.3f}")
    return ok


async def main_async(args: argparse.Namespace) -> int:
    configure_logging(level="warning")
    print(
        f"daemon_life: {args.contacts:,} contacts, {args.cycles} cycles of {args.minutes:g} min "
        f"({args.cycles * args.minutes / 1440:.1f} days), {args.changes} Constant Contact and "
        f"{args.app_changes} app changes a cycle, a campaign every {args.campaign_every} cycles"
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}", flush=True)  # fmt: skip
    sim = SimProcess(args.contacts, lists=6, campaigns=2)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = work_folder(tmp, args.keep) / "ccsync"
            settings = await prepare(sim, args, folder)
            clock = SimTime(datetime.fromisoformat((await sim.admin("GET", "state"))["now"]))
            async with (
                wire(settings, clock=clock) as w,
                await EventLog.open(settings.log_path, writer=False) as reader,
            ):
                return await live(sim, args, w, reader, clock, folder / "app.db")
    finally:
        sim.stop()


async def prepare(sim: SimProcess, args: argparse.Namespace, folder: Path) -> Settings:
    """The demo's folder against the simulator, its config saying the simulated daemon's
    cadence (the opt-out bound of `ccsync audit` after --keep follows from it)."""
    config = await prepare_folder(
        folder, await sim.access(), app_contacts=args.app_contacts, daily_budget=10_000_000
    )
    text = config.read_text().replace(
        "interval_seconds = 60", f"interval_seconds = {args.minutes * 60:g}"
    )
    config.write_text(text.replace("jitter_seconds = 5", "jitter_seconds = 0"))
    return load_settings(config)


async def change_the_world(
    sim: SimProcess, args: argparse.Namespace, rng: random.Random, app_db: Path, k: int,
    clock: SimTime,
) -> None:  # fmt: skip
    """What happens in both stores between cycle ``k - 1`` and cycle ``k``; then the clock
    moves to cycle ``k``."""
    if k % args.campaign_every == 0:
        await sim.admin("POST", "world/step", {"n": 1, "kinds": ["campaign"]})
    if args.changes:
        await sim.admin("POST", "world/step", {"n": args.changes, "kinds": _CHANGES})
    if args.app_changes:
        at = clock.now + timedelta(minutes=1)  # a minute after the last cycle's bound
        change_sample_app(app_db, rng, f"c{k}", args.app_changes, at)
    await clock.advance(sim, args.minutes * 60)


async def one_cycle(
    w: Wired, reader: EventLog, metrics: DaemonMetrics, clock: SimTime,
    profiler: cProfile.Profile | None,
) -> tuple[CycleSummary, Cycle]:  # fmt: skip
    """One cycle, then the daemon's end-of-cycle measurement; its figures. Raises the
    cycle's CcsyncError (a store out of reach after the retries)."""
    head = (await w.log.head()).position
    c0, t1 = cpu_seconds(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        summary = await w.engine.cycle()
    finally:
        if profiler is not None:
            profiler.disable()
    seconds, cpu = time.perf_counter() - t1, cpu_seconds() - c0
    t2 = time.perf_counter()
    await metrics.measure_cycle_end(reader, clock.now, w.settings.opt_out_bound_seconds)
    return summary, Cycle(
        seconds=seconds,
        cpu=cpu,
        measure=time.perf_counter() - t2,
        requests=summary.api_requests,
        events=(await w.log.head()).position - head,
        commands=sum(summary.commands.values()),
        phases=summary.durations,
    )


async def live(
    sim: SimProcess, args: argparse.Namespace, w: Wired, reader: EventLog, clock: SimTime,
    app_db: Path,
) -> int:  # fmt: skip
    """The initial sync, then the daemon's life; prints the figures, returns the exit code."""
    t0 = time.perf_counter()
    first = await w.engine.cycle()
    print(
        f"initial sync: {time.perf_counter() - t0:.2f}s, observed {first.observed}, "
        f"commands {sum(first.commands.values()):,}",
        flush=True,
    )
    if args.faults:
        half = args.faults / 2
        faults = {"error_rate": args.faults, "reset_rate": half, "truncate_rate": half,
                  "repeat_rate": 0.2, "seed": args.seed}  # fmt: skip
        await sim.admin("PUT", "faults", faults)
    rng, metrics = random.Random(args.seed), DaemonMetrics()
    # --profile: the young window's cycles and the old one's, each in a profile
    profiles = {True: cProfile.Profile(), False: cProfile.Profile()}
    cycles: list[Cycle] = []
    failed = failed_cycles = 0
    started = time.perf_counter()
    for k in range(1, args.cycles + 2):  # 1: the settling cycle, not counted
        await change_the_world(sim, args, rng, app_db, k, clock)
        young = 2 <= k < 2 + args.window
        old = k > args.cycles + 1 - args.window
        profiler = profiles[young] if args.profile and (young or old) else None
        try:
            summary, cycle = await one_cycle(w, reader, metrics, clock, profiler)
        except CcsyncError as exc:
            print(f"  cycle {k} failed: {exc}", flush=True)
            failed_cycles += 1
            continue
        failed += summary.failed
        if summary.outcome not in ("ok", "partial"):
            print(f"cycle {k}: {summary.outcome} {summary.error}", file=sys.stderr)
            return 1
        if k > 1:
            cycles.append(cycle)
            if len(cycles) % args.progress == 0:
                progress(cycles, args, Path(w.settings.log_path))
    print(
        f"{len(cycles)} cycles in {time.perf_counter() - started:.1f}s; "
        f"commands failed: {failed}; cycles failed: {failed_cycles}"
    )
    converged = await after_faults(sim, w, clock) if args.faults else True
    window = min(args.window, len(cycles) // 2)
    ok = report(cycles[:window], cycles[-window:], args.max_growth)
    print(f"peak RSS: {rss_mb():.0f} MB")
    if args.profile:
        for young, label in ((True, "young"), (False, "old")):
            print(f"\nthe {label} window's cycles, by own time (cProfile):")
            stats = pstats.Stats(profiles[young], stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(args.profile)
    return 0 if ok and converged else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--contacts", type=int, default=20_000)
    p.add_argument("--app-contacts", type=int, default=2_000)
    p.add_argument("--cycles", type=int, default=960, help="default 960: ten days of 15 minutes")
    p.add_argument("--minutes", type=float, default=15.0, help="simulated time a cycle")
    p.add_argument("--changes", type=int, default=20, help="Constant Contact changes a cycle")
    p.add_argument("--app-changes", type=int, default=4, help="app changes a cycle")
    p.add_argument(
        "--campaign-every", type=int, default=96, help="cycles between campaigns (96: daily)"
    )
    p.add_argument("--window", type=int, default=96, help="cycles in each window compared")
    p.add_argument("--max-growth", type=float, default=1.5)
    p.add_argument("--progress", type=int, default=96, help="a progress line every N cycles")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile the cycles of both windows; print each one's N costliest functions",
    )
    p.add_argument(
        "--faults",
        type=float,
        default=0.0,
        help="Constant Contact answers this share of requests with a 500 or 503, and half as "
        "many each with a reset connection and a truncated body (and contact pages repeat an "
        "item); at the end, faults off, the stores must agree (a full compare: no command)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the run's files in this new folder (DIR/ccsync: the log, app.db, "
        "ccsync.toml) for `ccsync audit` and `ccsync status` afterwards",
    )
    sys.exit(asyncio.run(main_async(p.parse_args())))


if __name__ == "__main__":
    main()
