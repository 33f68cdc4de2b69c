"""``ccsync sync``, ``ccsync status`` and ``ccsync replay``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from engine.bootstrap import wire
from engine.cli._common import add_config_arg, settings_from_args, table
from engine.cli.log_cmd import _parse_time
from engine.errors import ConfigError
from engine.log import EventLog
from engine.progress import Progress
from engine.status import read_status
from projections.projector import Projector, compare_projections, rebuild
from projections.runner import projected_position, projection_layout
from projections.schema import VERSION

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("sync", help="run one sync cycle")
    add_config_arg(s)
    s.add_argument(
        "--full-compare",
        action="store_true",
        help="compare every contact for drift, not only those touched since the last cycle",
    )
    s.set_defaults(handler=_sync)

    st = sub.add_parser("status", help="checkpoints, last cycles, pending and failed commands")
    add_config_arg(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=_status)

    r = sub.add_parser("replay", help="rebuild state from the log, as of a position or time")
    add_config_arg(r)
    when = r.add_mutually_exclusive_group(required=True)
    when.add_argument("--to-position", type=int, help="rebuild up to this position (inclusive)")
    when.add_argument("--as-of", type=_parse_time, help="rebuild as recorded before this time")
    when.add_argument(
        "--check", action="store_true", help="rebuild from zero and prove it equals the live state"
    )
    when.add_argument(
        "--upgrade",
        action="store_true",
        help="rebuild the live projections in place if an earlier build laid them out "
        "(contacts no store)",
    )
    r.add_argument("--out", type=Path, help="the new file to write the rebuilt state into")
    r.add_argument("--diff", action="store_true", help="also count rows that differ from live")
    r.set_defaults(handler=_replay)


async def _sync(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with wire(settings) as w:
        w.engine.progress = Progress()
        summary = await w.engine.cycle(full_compare=args.full_compare)
    print(msgspec.json.encode(summary).decode())
    return 0 if summary.outcome == "ok" else 1


async def _status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with await EventLog.open(settings.log_path, writer=False) as log:
        status = await read_status(log, datetime.now(UTC))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(status)).decode())
        return 0
    print(f"log {settings.log_path}: {status.events} events, projected to {status.projected}")
    print("\ncheckpoints")
    rows = [[c.name, c.updated_at, f"{c.lag_seconds:.0f}s"] for c in status.checkpoints]
    print(table(["name", "updated", "lag"], rows))
    print("\nlast cycles")
    rows = [
        [r.run_id[:12], r.started_at, r.outcome or "running", _counts(r.counts), r.error or ""]
        for r in status.runs
    ]
    print(table(["run", "started", "outcome", "counts", "error"], rows))
    budget = int(settings.ctct.get("daily_budget", 10_000))
    print(
        f"\nConstant Contact API today (UTC): {status.api_requests_today:,} of {budget:,} requests"
    )
    if status.quota_exhausted:
        print(f"  quota exhausted: {status.quota_exhausted}")
    print(f"\ncommands: {status.commands}")
    if status.failed:
        print("\nfailed commands")
        rows = [
            [f.command_id[:12], f.target, f.kind, f.email, str(f.attempts), f.error or ""]
            for f in status.failed
        ]
        print(table(["command", "target", "kind", "email", "tries", "error"], rows))
    if status.pending:
        print(f"\n{status.pending} command(s) issued without an outcome (retried at next start)")
    return 0


def _counts(counts: dict[str, Any] | None) -> str:
    if not counts:
        return ""
    keep = ("applied", "failed", "blocked", "withheld", "tracking_held", "api_requests")
    return " ".join(f"{k}={counts[k]}" for k in keep if counts.get(k))


def _layout_note(path: Path, layout: str | None) -> str:
    return (
        f"the live projections in {path} have layout {layout or 'unversioned'}, this build "
        f"writes layout {VERSION}: `ccsync replay --upgrade` rebuilds them from the log without "
        "contacting either store (as `ccsync sync` and the daemon do when they start); compare "
        "after that"
    )


async def _upgrade(path: Path) -> int:
    if not path.exists():  # (opening it for writing would create an empty log)
        raise ConfigError("[log] path", f"no event log at {path}")
    async with await EventLog.open(path) as log:  # the writer: refused while another holds it
        before = await projection_layout(log.connection)
        projector = Projector(log)
        await projector.start()
        position = await projector.position()
    if before == VERSION:
        print(f"the projections already have layout {VERSION}; caught up to position {position}")
    else:
        print(
            f"rebuilt the projections from layout {before or 'unversioned'} to layout "
            f"{VERSION}, up to position {position}"
        )
    return 0


async def _replay(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.upgrade:
        return await _upgrade(settings.log_path)
    async with await EventLog.open(settings.log_path, writer=False) as log:
        layout = await projection_layout(log.connection)
        if args.check and layout != VERSION:
            # A rebuild by this build cannot equal tables an earlier build laid out: that is
            # an upgrade not yet done, not a mismatch.
            print(f"cannot check: {_layout_note(settings.log_path, layout)}", file=sys.stderr)
            return 2
        if args.check:
            live = await projected_position(log.connection)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "rebuilt.db"
                await rebuild(log, out, stop=live + 1, progress=Progress())
                diffs = await compare_projections(settings.log_path, out)
            if diffs:
                print(
                    f"MISMATCH at position {live}: rows differing by table: {diffs}",
                    file=sys.stderr,
                )
                return 1
            print(f"ok: a rebuild from zero to position {live} equals the live projections")
            return 0
        if args.out is None:
            raise ConfigError("--out", "give the new file to write the rebuilt state into")
        if args.to_position is not None:
            stop = args.to_position + 1
        else:
            stop = await log.position_at(args.as_of)
        last = await rebuild(log, args.out, stop=stop, progress=Progress())
        print(f"rebuilt state up to position {last} into {args.out}")
        if args.diff and layout != VERSION:
            print(f"no diff: {_layout_note(settings.log_path, layout)}")
        elif args.diff:
            diffs = await compare_projections(settings.log_path, args.out)
            print(f"rows differing from live, by table: {diffs or 'none'}")
    return 0
