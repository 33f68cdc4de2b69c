"""Benchmark: the API requests tracking costs a daemon, per cycle and per day.

An account that sends two campaigns a week (26 in the 90 days ccsync reads) is simulated for
``--days`` days of 15-minute cycles. At every cycle, recipients open and click: mostly the
newest campaign, now and then an older one; every 3.5 days a new campaign goes out. Two
adapters follow the same account, cycle by cycle, each with its own resume token:

* **baseline**: every campaign's detail and every report at every cycle
  (``tracking_recheck_hours = 0``: what a sync must do when it cannot tell which reports have
  news, as the v3 reports have no date filter; what ccsync did before it read the counts);
* **ccsync**: the default, which reads Constant Contact's counts (ten campaign activities a
  request) and walks only the reports whose counts moved, and every report and detail once a
  day.

It prints each one's requests per cycle and per day, and checks that both recorded the same
activities by the end (a run of each after the last cycle, a day on, so that the daily
recheck has run).

    .venv/bin/python scripts/bench/tracking_polls.py [--contacts 5000] [--days 2] [--events 12]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from adapters.constant_contact import CtctConfig, RateBudget, StoredTokens, TokenStore, open_ctct
from adapters.constant_contact.adapter import CtctAdapter
from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from engine.logging import configure_logging

CYCLE = timedelta(minutes=15)
_DAY_MS = 24 * 3600 * 1000


class Follower:
    """One adapter reading the account's tracking, run after run, as a daemon would."""

    def __init__(self, name: str, ctct: CtctAdapter) -> None:
        self.name, self.ctct = name, ctct
        self.resume: str | None = None
        self.per_cycle: list[int] = []
        self.seen: set[tuple[str, str, str, datetime]] = set()
        self.seconds = 0.0

    async def run(self, bound: datetime) -> int:
        before = self.ctct.requests_made
        t0 = time.perf_counter()
        async for page in self.ctct.observe_tracking(self.resume, bound):
            self.resume = page.resume
            self.seen |= {
                (a.campaign_activity_id, a.kind, a.contact_id, a.created_time)
                for a in page.activities
            }
        self.seconds += time.perf_counter() - t0
        return self.ctct.requests_made - before


def _config(sim: Simulator, token_file: Path, recheck_hours: float) -> CtctConfig:
    doc = {
        **sim.ctct_settings(),
        "token_file": str(token_file),
        "requests_per_second": 1000,
        "daily_budget": 10_000_000,
        "tracking_reserve": 0,
        "backoff_base": 0,
        "tracking_recheck_hours": recheck_hours,
    }
    return CtctConfig.from_toml(doc, env={"CCSYNC_CTCT_CLIENT_SECRET": sim.client_secret})


def _living(sim: Simulator, rng: random.Random, cycle: int, events: int) -> None:
    """A cycle's engagement: up to ``events - 1`` opens and clicks, mostly on the newest
    campaign; every 3.5 days a new campaign."""
    tracking = sim.tracking
    if cycle and cycle % (7 * 96 // 2) == 0:
        tracking.send_campaign(f"Campaign c{cycle}", 800)
    campaigns = list(tracking.campaigns.values())
    primaries = [c.activities[0][0] for c in campaigns]
    for _ in range(rng.randrange(0, events) if events else 0):
        # Three in four on the newest campaign, the rest on any of the others.
        activity = primaries[-1] if rng.random() < 0.75 else rng.choice(primaries)
        sends = tracking.records[activity]["em_sends"]
        reader = sim.account.by_id[sends[rng.randrange(len(sends))].contact_id]
        kind = "em_opens" if rng.random() < 0.7 else "em_clicks"
        extra = {"device_type": "mobile"}
        if kind == "em_clicks":
            extra |= {"url_id": "1", "link_url": "https://example.org/news"}
        tracking.record(activity, reader, kind, extra)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--contacts", type=int, default=5000)
    p.add_argument("--days", type=float, default=2.0)
    p.add_argument(
        "--events",
        type=int,
        default=12,
        help="opens and clicks per cycle: up to one less than this (0: a quiet account)",
    )
    args = p.parse_args()
    configure_logging(level="warning", json=False)
    config = SimulatorConfig(
        contacts=args.contacts, seed=3, campaigns=0, rate_limits=False, daily_quota=10_000_000
    )
    async with run_simulator(config) as sim:
        now = sim.clock.now_ms()
        for i in range(26):  # two a week over the last 13 weeks
            at = now - (26 - i) * _DAY_MS * 7 // 2
            sim.tracking.send_campaign(f"Newsletter {i + 1}", 800, at=at, until=now)
        with tempfile.TemporaryDirectory() as tmp:
            followers = []
            for name, hours in (("baseline", 0.0), ("ccsync", 24.0)):
                token_file = Path(tmp) / f"{name}.json"
                t = sim.issue_tokens()
                TokenStore(token_file).save(
                    StoredTokens(access_token=t.access_token, refresh_token=t.refresh_token)
                )
                budget = RateBudget(1000, 10_000_000)
                ctct = await open_ctct(_config(sim, token_file, hours), budget)
                followers.append(Follower(name, ctct))
            try:
                for f in followers:  # the first run reads everything: not a daemon's day
                    await f.run(sim.clock.now())
                rng = random.Random(5)
                cycles = int(args.days * 96)
                for cycle in range(cycles):
                    sim.clock.advance(seconds=CYCLE.total_seconds())
                    _living(sim, rng, cycle, args.events)
                    bound = sim.clock.now()
                    for f in followers:
                        f.per_cycle.append(await f.run(bound))
                sim.clock.advance(seconds=24 * 3600)
                for f in followers:
                    await f.run(sim.clock.now())
            finally:
                for f in followers:
                    await f.ctct.close()
        campaigns = sum(
            1
            for c in sim.tracking.campaigns.values()
            if c.updated_at >= sim.clock.now_ms() - 90 * _DAY_MS
        )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(
        f"account: {args.contacts:,} contacts, {campaigns} campaigns in the 90-day window at the "
        f"end; {cycles} cycles of 15 minutes ({args.days:g} days)"
    )
    base = followers[0]
    for f in followers:
        per_day = sum(f.per_cycle) / args.days
        print(
            f"{f.name:9} requests per cycle: median {statistics.median(f.per_cycle):.0f}, "
            f"max {max(f.per_cycle)}; per day {per_day:,.0f} "
            f"({per_day / (sum(base.per_cycle) / args.days):.1%} of the baseline); "
            f"time in the adapter {f.seconds:.1f} s"
        )
    same = followers[0].seen == followers[1].seen
    print(
        f"activities recorded: baseline {len(base.seen):,}, ccsync {len(followers[1].seen):,}: "
        f"{'the same' if same else 'DIFFERENT'}"
    )
    if not same:
        for f, g in ((followers[0], followers[1]), (followers[1], followers[0])):
            print(f"only {f.name}:", sorted(f.seen - g.seen)[:5])
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
