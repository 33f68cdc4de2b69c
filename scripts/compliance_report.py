"""Monthly compliance report: every opt-out of a month and how it reached the other store, as CSV.

    .venv/bin/python scripts/compliance_report.py --config ccsync.toml --month 2026-11 > nov.csv

Columns: email, store where it happened, when, by whom, reason, when ccsync saw it, the command
that carried it, when applied and confirmed, latency in seconds, state, and any violation found
for that address (not propagated within the bound, late, or a send after the opt-out). Exits 1
when the month has violations, so a scheduled job can alert on it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from datetime import UTC, datetime, timedelta

from engine.audit import audit_optouts, find_violations
from engine.log import EventLog
from engine.settings import load_settings

COLUMNS = [
    "email", "store", "happened_at", "source", "reason", "seen_at", "command_id", "applied_at",
    "confirmed_at", "latency_seconds", "state", "violations",
]  # fmt: skip


def month_range(text: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


async def report(config: str, month: str) -> int:
    settings = load_settings(config)
    start, end = month_range(month)
    async with await EventLog.open(settings.log_path, writer=False) as log:
        optouts = await audit_optouts(log, since=start)
        bound = timedelta(seconds=settings.opt_out_bound_seconds)
        violations = await find_violations(log, min(end, datetime.now(UTC)), bound)
    by_email: dict[str, list[str]] = {}
    for v in violations:
        by_email.setdefault(v.email, []).append(f"{v.kind}: {v.detail}")
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(COLUMNS)
    flagged = 0
    for o in optouts:
        if o.seen_at >= end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"):
            continue
        found = by_email.get(o.email, [])
        flagged += bool(found)
        out.writerow([
            o.email, o.store, o.happened_at, o.source, o.reason, o.seen_at, o.command_id,
            o.applied_at, o.confirmed_at, o.latency_seconds, o.state, " | ".join(found),
        ])  # fmt: skip
    return 1 if flagged else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--month", required=True, help="YYYY-MM (UTC)")
    args = p.parse_args()
    sys.exit(asyncio.run(report(args.config, args.month)))


if __name__ == "__main__":
    main()
