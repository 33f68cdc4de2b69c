"""What the daemon's /metrics and its per-cycle opt-out measurement cost on a real log.

Builds a log by one real initial sync (a simulator with --contacts contacts, a SQLite app), then
times, over HTTP on loopback, ``/healthz`` (the baseline: no log read) against ``/metrics`` with
its log snapshot re-read on every request (the worst case; the daemon re-reads at most once a
second), and in-process the once-per-cycle ``measure_cycle_end`` (commands by kind and status,
the oldest unpropagated opt-out). Each figure is the
best of --repeat rounds (neighbours on the machine only ever add time).

    .venv/bin/python scripts/bench/daemon_metrics.py --contacts 20000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from adapters.ctct_simulator import SimulatorConfig, run_simulator
from engine._daemon_http import Health, start_http
from engine._metrics import DaemonMetrics
from engine.bootstrap import wire
from engine.cli._demo_setup import prepare_folder
from engine.log import EventLog
from engine.logging import configure_logging
from engine.settings import load_settings


async def best_ms(fn: Callable[[], Awaitable[object]], n: int, repeat: int) -> float:
    """Milliseconds per call: the best round of ``n`` calls."""
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        rounds.append((time.perf_counter() - t0) / n * 1000)
    return min(rounds)


async def main(contacts: int, app_contacts: int, n: int, repeat: int) -> None:
    configure_logging(level="warning", json=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with run_simulator(SimulatorConfig(contacts=contacts, seed=1, campaigns=2)) as sim:
            config = await prepare_folder(Path(tmp), sim, app_contacts=app_contacts, seed=2)
            settings = load_settings(config)
            t0 = time.perf_counter()
            async with wire(settings) as w:
                summary = await w.engine.cycle()
                await w.engine.projector.catch_up()
            sync_s = time.perf_counter() - t0
        async with await EventLog.open(settings.log_path, writer=False) as reader:
            head = (await reader.head()).position
            size_mb = settings.log_path.stat().st_size / 1e6
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
            cycle_end = await best_ms(
                lambda: metrics.measure_cycle_end(reader, now, 1800), 3, repeat
            )
    print(
        f"log: {head:,} events ({size_mb:.1f} MB) from an initial sync of {contacts:,} + "
        f"{app_contacts:,} contacts in {sync_s:.1f} s ({sum(summary.commands.values()):,} commands)"
    )
    rows = [
        ("GET /healthz (baseline: no log read)", healthz),
        ("GET /metrics (snapshot re-read each time)", scrape),
        ("measure_cycle_end (once per cycle)", cycle_end),
    ]
    print(f"{'':44}{'ms':>9}{'ratio':>8}")
    for label, ms in rows:
        print(f"{label:44}{ms:>9.2f}{ms / healthz:>8.1f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=20_000, help="contacts in Constant Contact")
    p.add_argument("--app-contacts", type=int, default=2_000, help="contacts in the app")
    p.add_argument("--requests", type=int, default=50, help="requests per round")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    a = p.parse_args()
    asyncio.run(main(a.contacts, a.app_contacts, a.requests, a.repeat))
