"""``ccsync audit opt-outs`` and ``ccsync audit contact``: compliance questions, answered from
the log."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from engine.audit import (
    audit_optouts,
    blocked_decisions,
    contact_history,
    find_violations,
    rejected_records,
)
from engine.cli._common import add_config_arg, settings_from_args, table
from engine.cli.log_cmd import _parse_time
from engine.log import EventLog
from engine.model import normalise_email

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit", help="opt-out histories, violations, one person's history, refusals, rejects"
    )
    asub = p.add_subparsers(dest="audit_command", metavar="QUESTION", required=True)
    o = asub.add_parser("opt-outs", help="each opt-out: when, seen, carried, confirmed")
    add_config_arg(o)
    o.add_argument("--email", help="only this address")
    o.add_argument("--since", type=_parse_time, help="only opt-outs seen since (ISO-8601)")
    o.add_argument("--format", choices=("table", "json", "csv"), default="table")
    o.add_argument(
        "--violations",
        action="store_true",
        help="list opt-outs not propagated within the bound, and sends after an opt-out",
    )
    o.add_argument(
        "--bound",
        type=float,
        help="seconds allowed for propagation (default: sync interval plus 15 minutes)",
    )
    o.set_defaults(handler=_optouts)
    c = asub.add_parser("contact", help="one person's whole history across both stores")
    add_config_arg(c)
    c.add_argument("email")
    c.add_argument("--format", choices=("table", "json", "csv"), default="table")
    c.set_defaults(handler=_contact)
    b = asub.add_parser(
        "blocked",
        help="every action refused for consent: a re-subscribe, a list change for an opted-out "
        "contact",
    )
    add_config_arg(b)
    b.add_argument("--email", help="only this address")
    b.add_argument("--since", type=_parse_time, help="only decisions recorded since (ISO-8601)")
    b.add_argument("--format", choices=("table", "json", "csv"), default="table")
    b.set_defaults(handler=_blocked)
    r = asub.add_parser(
        "rejected",
        help="every record a store returned that could not be taken (the record as observed: "
        "ccsync log show --from POSITION --to POSITION)",
    )
    add_config_arg(r)
    r.add_argument("--store", choices=("ctct", "app"), help="only this store's records")
    r.add_argument("--since", type=_parse_time, help="only records rejected since (ISO-8601)")
    r.add_argument("--format", choices=("table", "json", "csv"), default="table")
    r.set_defaults(handler=_rejected)


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
