"""What the daemon's /metrics and its per-cycle measurements cost on a real log.

Builds a log by one real initial sync (a simulator with --contacts contacts, a SQLite app), then
times, over HTTP on loopback, ``/healthz`` (the baseline: no log read) against ``/metrics`` with
its log snapshot re-read on every request (the worst case; the daemon re-reads at most once a
second). Beside it, in the same run, the snapshot's read as it was before it left the settled
commands out (every command counted at every scrape).

Then the once-per-cycle ``measure_cycle_end`` (the unsettled commands by kind, the oldest
unpropagated opt-out), as a daemon pays it: once after start (it audits every opt-out), then
after each of --cycles incremental cycles that follow 1% of the contacts changing (it re-audits
only the emails that moved), each beside the full measurement every cycle paid before (every
command grouped, every opt-out audited) on the same log, and the two ages compared. Scrape
figures are the best of --repeat rounds (neighbours on the machine only ever add time).

    .venv/bin/python scripts/bench/daemon_metrics.py --contacts 20000
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from adapters.ctct_simulator import SimulatorConfig, run_simulator
from engine._daemon_http import Health, start_http
from engine._metrics import DaemonMetrics
from engine.audit import UnpropagatedWatch, oldest_unpropagated_optout
from engine.bootstrap import wire
from engine.cli._demo_setup import prepare_folder
from engine.log import EventLog
from engine.logging import configure_logging
from engine.settings import load_settings
from engine.status import read_status


async def best_ms(fn: Callable[[], Awaitable[object]], n: int, repeat: int) -> float:
    """Milliseconds per call: the best round of ``n`` calls."""
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        rounds.append((time.perf_counter() - t0) / n * 1000)
    return min(rounds)


async def full_measurement(reader: EventLog, now: datetime) -> float | None:
    """What ``measure_cycle_end`` read before it kept to what changed: every command grouped,
    every opt-out audited."""
    await reader.connection.execute_fetchall(
        "SELECT target, kind, status, COUNT(*) FROM p_commands GROUP BY target, kind, status"
    )
    return await oldest_unpropagated_optout(reader, now)


async def scrape_figures(reader: EventLog, n: int, repeat: int) -> list[tuple[str, float]]:
    """``/healthz`` and ``/metrics`` over HTTP, and the snapshot read before and now."""
    metrics = DaemonMetrics()
    health = Health(status="ok", cycles=1, in_cycle=False)
    server = await start_http(
        "127.0.0.1", 0, lambda: health, lambda: metrics.render(reader, max_age=0)
    )
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{server.port}"

            async def get(path: str) -> None:
                async with http.get(base + path) as resp:
                    await resp.read()

            healthz = await best_ms(lambda: get("/healthz"), n, repeat)
            scrape = await best_ms(lambda: get("/metrics"), n, repeat)
    finally:
        await server.close()
    now = datetime.now(UTC)
    every = await best_ms(lambda: read_status(reader, now, runs=0, settled=True), n, repeat)
    unsettled = await best_ms(lambda: read_status(reader, now, runs=0, settled=False), n, repeat)
    return [
        ("GET /healthz (baseline: no log read)", healthz),
        ("GET /metrics (snapshot re-read each time)", scrape),
        ("  its snapshot read, every command counted (before)", every),
        ("  its snapshot read, unsettled commands only (now)", unsettled),
    ]


def print_scrape(title: str, rows: list[tuple[str, float]]) -> None:
    print(f"{title:52}{'ms':>9}{'ratio':>8}")
    for label, ms in rows:
        print(f"{label:52}{ms:>9.2f}{ms / rows[0][1]:>8.1f}")


async def measure_once(metrics: DaemonMetrics, reader: EventLog, what: str) -> None:
    """One ``measure_cycle_end`` beside the full measurement, and whether their ages agree."""
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    await metrics.measure_cycle_end(reader, now, 1800)
    ms = (time.perf_counter() - t0) * 1000
    age = metrics._scrape.optout_age
    t0 = time.perf_counter()
    full_age = await full_measurement(reader, now)
    full_ms = (time.perf_counter() - t0) * 1000
    mine = age[0] if age else None
    verdict = "agrees" if mine == full_age else f"DIFFERS from {full_age}"
    print(
        f"  {what:30} {ms:9.1f} ms   full {full_ms:9.1f} ms   "
        f"oldest unpropagated opt-out {mine} s ({verdict})",
        flush=True,
    )


async def main(contacts: int, app_contacts: int, n: int, repeat: int, cycles: int) -> None:
    configure_logging(level="warning", json=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with run_simulator(SimulatorConfig(contacts=contacts, seed=1, campaigns=2)) as sim:
            # (Cycles of 1% changes at a million contacts need more than a real key's 10,000
            # requests a day.)
            config = await prepare_folder(
                Path(tmp), sim, app_contacts=app_contacts, seed=2, daily_budget=10_000_000
            )
            settings = load_settings(config)
            async with wire(settings) as w:
                t0 = time.perf_counter()
                summary = await w.engine.cycle()
                sync_s = time.perf_counter() - t0
                async with await EventLog.open(settings.log_path, writer=False) as reader:
                    print(
                        f"log: {(await reader.head()).position:,} events "
                        f"({settings.log_path.stat().st_size / 1e6:.1f} MB) from an initial sync "
                        f"of {contacts:,} + {app_contacts:,} contacts in {sync_s:.1f} s "
                        f"({sum(summary.commands.values()):,} commands)"
                    )
                    after_sync = await scrape_figures(reader, n, repeat)
                    print_scrape("right after the initial sync", after_sync)
                    print(
                        "measure_cycle_end after each cycle, beside the full measurement "
                        "(every command grouped, every opt-out audited):"
                    )
                    metrics = DaemonMetrics()
                    await measure_once(metrics, reader, "after start")
                    for k in range(1, cycles + 1):
                        changed = max(1, contacts // 100) if k > 1 else 0
                        if changed:
                            sim.call(functools.partial(sim.world.step, changed))
                        await w.engine.cycle()
                        what = f"cycle {k}: {changed:,} changes" if changed else f"cycle {k}"
                        await measure_once(metrics, reader, what)
                    print_scrape("after those cycles", await scrape_figures(reader, n, repeat))


async def measure_log(path: Path) -> None:
    """On a log left by ``sync.py --keep``, read-only: the measurement as the daemon makes it
    after the log's last cycle, beside the full one, each twice (cold, then warm)."""
    async with await EventLog.open(path, writer=False) as reader:
        conn = reader.connection
        runs = await conn.execute_fetchall(
            "SELECT started_position FROM p_runs ORDER BY started_position DESC LIMIT 1"
        )
        last = int(next(iter(runs))[0])
        now = datetime.now(UTC)
        full = UnpropagatedWatch()
        await full.oldest(reader, now)
        print(
            f"log: {(await reader.head()).position:,} events ({path.stat().st_size / 1e6:.0f} "
            f"MB); its last cycle started at position {last:,}; "
            f"{len(full.unsettled)} opt-out(s) unsettled now"
        )
        for run in ("first", "second"):
            # The daemon's watch as it stood before that cycle: measured up to its start, with
            # the emails in flight then (taken as those in flight now: a bench approximation).
            watch = UnpropagatedWatch()
            watch._after, watch._open = last - 1, {o.email for o in full.unsettled}
            metrics = DaemonMetrics()
            metrics._optouts = watch
            t0 = time.perf_counter()
            await metrics.measure_cycle_end(reader, now, 1800)
            ms = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            full_age = await full_measurement(reader, now)
            full_ms = (time.perf_counter() - t0) * 1000
            mine = metrics._scrape.optout_age
            print(
                f"  {run} pass: measure_cycle_end {ms:8.1f} ms   full {full_ms:8.1f} ms   "
                f"ages {mine[0] if mine else None} / {full_age}"
            )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=20_000, help="contacts in Constant Contact")
    p.add_argument("--app-contacts", type=int, default=2_000, help="contacts in the app")
    p.add_argument("--requests", type=int, default=50, help="requests per round")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    p.add_argument(
        "--cycles",
        type=int,
        default=4,
        help="cycles measured after the first (its confirmations, then 1%% changes each)",
    )
    p.add_argument(
        "--log",
        type=Path,
        help="instead: measure after the last cycle of this log (sync.py --keep), read-only",
    )
    a = p.parse_args()
    if a.log is not None:
        asyncio.run(measure_log(a.log))
    else:
        asyncio.run(main(a.contacts, a.app_contacts, a.requests, a.repeat, a.cycles))
