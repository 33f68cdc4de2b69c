"""``ccsync log``: verify, anchor, stats and show the event log."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import ConfigError
from engine.log import EventLog, Recorded
from engine.logverify import Anchor, verify_log

__all__ = ["register"]

DEFAULT_LOG = "ccsync.db"


def _log_path(args: argparse.Namespace) -> Path:
    return Path(args.log or os.environ.get("CCSYNC_LOG") or DEFAULT_LOG)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ccsync log verify|anchor|stats|show``."""
    p = sub.add_parser("log", help="inspect and verify the event log")
    logsub = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = logsub.add_parser(name, help=help_)
        sp.add_argument("--log", help=f"the log file (default $CCSYNC_LOG or {DEFAULT_LOG})")
        return sp

    v = add("verify", "check the hash chain, positions and append-only guarantees")
    v.add_argument("--anchor", type=Path, help="an anchor file from `ccsync log anchor`")
    v.set_defaults(handler=_verify)
    a = add("anchor", "print the head (position and hash) to keep elsewhere")
    a.set_defaults(handler=_anchor)
    s = add("stats", "event count, file size, streams, head")
    s.set_defaults(handler=_stats)
    sh = add("show", "print events as JSON lines")
    sh.add_argument("--stream", help="only this stream (store:entity:key)")
    sh.add_argument("--type", dest="types", action="append", help="only this event type")
    sh.add_argument("--from", dest="start", type=int, default=1, help="first position")
    sh.add_argument("--to", dest="stop", type=int, help="last position (inclusive)")
    sh.add_argument("--since", type=_parse_time, help="recorded at or after (ISO-8601)")
    sh.add_argument("--until", type=_parse_time, help="recorded before (ISO-8601)")
    sh.set_defaults(handler=_show)


def _parse_time(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. {text}Z): {text!r}")
    return ts


async def _verify(args: argparse.Namespace) -> int:
    anchor = None
    if args.anchor:
        try:
            anchor = msgspec.json.decode(args.anchor.read_bytes(), type=Anchor)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError("--anchor", f"cannot read {args.anchor}: {exc}") from exc
    async with await EventLog.open(_log_path(args), writer=False) as log:
        report = await verify_log(log, anchor)
    head = report.head
    if report.ok:
        assert head is not None
        print(f"ok: {report.checked} events, head position {head.position} hash {head.hash}")
        return 0
    where = report.first_bad if report.first_bad is not None else "none (see below)"
    print(f"FAILED: first bad position {where}", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


async def _anchor(args: argparse.Namespace) -> int:
    async with await EventLog.open(_log_path(args), writer=False) as log:
        head = await log.head()
    sys.stdout.write(msgspec.json.encode(Anchor(head.log_id, head.position, head.hash)).decode())
    sys.stdout.write("\n")
    return 0


async def _stats(args: argparse.Namespace) -> int:
    path = _log_path(args)
    async with await EventLog.open(path, writer=False) as log:
        head = await log.head()
        rows = await log._fetch("SELECT type, COUNT(*) FROM events GROUP BY type", ())
        [(streams,)] = await log._fetch("SELECT COUNT(DISTINCT stream) FROM events", ())
        checkpoints = await log.checkpoints()
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    out: dict[str, Any] = {
        "log": str(path),
        "log_id": head.log_id,
        "events": head.position,
        "file_bytes": size,
        "streams": streams,
        "head": {"position": head.position, "hash": head.hash, "recorded_at": head.recorded_at},
        "by_type": dict(sorted(rows)),
        "checkpoints": {k: {"position": v[1], "updated_at": v[2]} for k, v in checkpoints.items()},
    }
    print(msgspec.json.format(msgspec.json.encode(out)).decode())
    return 0


async def _show(args: argparse.Namespace) -> int:
    enc = msgspec.json.Encoder()
    types = set(args.types or ())
    out = sys.stdout.buffer
    async with await EventLog.open(_log_path(args), writer=False) as log:

        def emit(r: Recorded) -> None:
            if types and r.event.__struct_config__.tag not in types:
                return
            out.write(enc.encode(r))
            out.write(b"\n")

        if args.stream:
            for r in await log.read_stream(args.stream):
                if (
                    args.start <= r.position
                    and (args.stop is None or r.position <= args.stop)
                    and (args.since is None or r.recorded_at >= args.since)
                    and (args.until is None or r.recorded_at < args.until)
                ):
                    emit(r)
        else:
            start = max(args.start, await log.position_at(args.since)) if args.since else args.start
            stop = args.stop + 1 if args.stop is not None else None
            if args.until:
                until = await log.position_at(args.until)
                stop = until if stop is None else min(stop, until)
            async for r in log.read(start, stop):
                emit(r)
    out.flush()
    return 0
