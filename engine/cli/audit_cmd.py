"""``ccsync audit opt-outs`` and ``ccsync audit contact``: compliance questions, answered from
the log."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from engine.audit import (
    audit_optouts,
    blocked_decisions,
    contact_history,
    find_violations,
    held_tracking,
    rejected_records,
)
from engine.cli._common import add_config_arg, settings_from_args, table
from engine.cli.log_cmd import _parse_time
from engine.log import EventLog
from engine.model import normalise_email

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], Awaitable[int]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit", help="opt-out histories, violations, one person's history, refusals, rejects"
    )
    asub = p.add_subparsers(dest="audit_command", metavar="QUESTION", required=True)

    def question(name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
        q = asub.add_parser(name, help=help_)
        add_config_arg(q)
        q.add_argument("--format", choices=("table", "json", "csv"), default="table")
        q.set_defaults(handler=handler)
        return q

    o = question("opt-outs", "each opt-out: when, seen, carried, confirmed", _optouts)
    o.add_argument("--email", help="only this address")
    o.add_argument("--since", type=_parse_time, help="only opt-outs seen since (ISO-8601)")
    o.add_argument(
        "--violations",
        action="store_true",
        help="list opt-outs not propagated within the bound, and sends after an opt-out",
    )
    o.add_argument(
        "--bound",
        type=float,
        help="seconds allowed for propagation (default: [sync] opt_out_bound_seconds, or two "
        "intervals with their jitter plus 15 minutes)",
    )
    c = question("contact", "one person's whole history across both stores", _contact)
    c.add_argument("email")
    b = question(
        "blocked",
        "every action refused for consent: a re-subscribe, a list change for an opted-out contact",
        _blocked,
    )
    b.add_argument("--email", help="only this address")
    b.add_argument("--since", type=_parse_time, help="only decisions recorded since (ISO-8601)")
    r = question(
        "rejected",
        "every record a store returned that could not be taken (the record as observed: "
        "ccsync log show --from POSITION --to POSITION)",
        _rejected,
    )
    r.add_argument("--store", choices=("ctct", "app"), help="only this store's records")
    r.add_argument("--since", type=_parse_time, help="only records rejected since (ISO-8601)")
    question(
        "held",
        "every contact whose tracking waits for a live app contact (deleted there, or never "
        "created), and why",
        _held,
    )


def _emit(fmt: str, rows: Sequence[msgspec.Struct], columns: list[str]) -> None:
    data = [msgspec.to_builtins(r) for r in rows]
    if fmt == "json":
        print(msgspec.json.encode(data).decode())
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(data)
        sys.stdout.write(buf.getvalue())
    else:
        print(
            table(columns, [["" if d.get(k) is None else str(d[k]) for k in columns] for d in data])
        )


async def _optouts(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    email = normalise_email(args.email) if args.email else None
    async with await EventLog.open(settings.log_path, writer=False) as log:
        if args.violations:
            bound = timedelta(seconds=args.bound or settings.opt_out_bound_seconds)
            found = await find_violations(log, datetime.now(UTC), bound)
            found = [v for v in found if email is None or v.email == email]
            _emit(args.format, found, ["kind", "email", "at", "detail"])
            return 1 if found else 0
        rows = await audit_optouts(log, email=email, since=args.since)
    columns = [
        "email",
        "store",
        "happened_at",
        "source",
        "reason",
        "seen_at",
        "state",
        "command_id",
        "applied_at",
        "confirmed_at",
        "latency_seconds",
        "error",
    ]
    _emit(args.format, rows, columns if args.format != "table" else columns[:-1])
    return 0


async def _contact(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with await EventLog.open(settings.log_path, writer=False) as log:
        lines = await contact_history(log, normalise_email(args.email))
    if not lines:
        print(f"nothing recorded about {args.email}", file=sys.stderr)
        return 1
    _emit(args.format, lines, ["position", "recorded_at", "store", "type", "summary"])
    return 0


async def _blocked(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    email = normalise_email(args.email) if args.email else None
    async with await EventLog.open(settings.log_path, writer=False) as log:
        rows = await blocked_decisions(log, email=email, since=args.since)
    columns = ["position", "recorded_at", "store", "contact_id", "email", "action", "reason"]
    _emit(args.format, rows, columns)
    return 0


async def _rejected(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with await EventLog.open(settings.log_path, writer=False) as log:
        rows = await rejected_records(log, store=args.store, since=args.since)
    _emit(args.format, rows, ["position", "recorded_at", "store", "record", "field", "problem"])
    return 0


async def _held(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with await EventLog.open(settings.log_path, writer=False) as log:
        rows = await held_tracking(log)
    columns = ["contact_id", "email", "activities", "first_at", "last_at", "reason"]
    _emit(args.format, rows, columns)
    return 0
