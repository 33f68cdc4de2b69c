"""``ccsync demo``: the whole thing on the bundled simulator and a SQLite app database.

Starts a simulated Constant Contact account (10,000 contacts, a living account), creates the
sample CRM, runs the initial sync, lets both sides change, runs incremental syncs, and prints
the audit of a contact who opted out along the way. With ``--dir`` everything it made stays
there (config, log, app database) for ``ccsync status``, ``audit`` and ``replay``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

from adapters.ctct_simulator import Simulator, SimulatorConfig
from engine.audit import audit_optouts, contact_history
from engine.bootstrap import wire
from engine.cli._common import table
from engine.cli._demo_setup import prepare_folder
from engine.cycle import CycleSummary
from engine.logging import configure_logging
from engine.progress import Progress
from engine.settings import load_settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the whole sync on the bundled simulator and sample app")
    p.add_argument("--dir", type=Path, help="keep everything the demo makes in this folder")
    p.add_argument("--contacts", type=int, default=10_000, help="simulated account size")
    p.add_argument("--app-contacts", type=int, default=500, help="sample app size")
    p.add_argument("--seed", type=int, default=7, help="the simulated world's seed")
    p.add_argument("--changes", type=int, default=300, help="changes made between syncs")
    p.set_defaults(handler=_demo)


def _say(text: str) -> None:
    print(text, flush=True)


def _line(title: str, s: CycleSummary) -> str:
    cmds = ", ".join(f"{k} {v}" for k, v in sorted(s.commands.items())) or "none"
    seen = s.observed.get("ctct.contacts", 0) + s.observed.get("app.contacts", 0)
    secs = sum(s.durations.values())
    return (
        f"{title}: {seen:,} contacts observed, commands: {cmds}; applied {s.applied}, "
        f"failed {s.failed}, blocked {s.blocked}; {s.api_requests} API requests; {secs:.1f}s"
    )


def _app_changes(app_db: Path) -> str:
    """The CRM's users at work: a rename and an unsubscribe, as the app itself would write."""
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    with sqlite3.connect(app_db) as db:
        (first,) = db.execute("SELECT id FROM contacts ORDER BY id LIMIT 1").fetchone()
        db.execute(
            f"UPDATE contacts SET first_name = 'Renamed', updated_at = {now} WHERE id = ?", (first,)
        )
        row = db.execute(
            "SELECT id, email FROM contacts WHERE email_status = 'active' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        db.execute(
            "UPDATE contacts SET email_status = 'unsubscribed', unsubscribe_reason = "
            f"'asked by phone', status_changed_at = {now}, updated_at = {now} WHERE id = ?",
            (row[0],),
        )
    return str(row[1])


async def _demo(args: argparse.Namespace) -> int:
    configure_logging(level="warning")
    keep = args.dir is not None
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="ccsync-demo-")
    folder = args.dir or Path(tmp.name)  # type: ignore[union-attr]
    if keep and (folder / "ccsync.db").exists():
        print(f"ccsync: error: {folder} already holds a demo; give another --dir", file=sys.stderr)
        return 2
    _say(f"Starting a simulated Constant Contact account with {args.contacts:,} contacts ...")
    sim = Simulator.start_in_thread(
        SimulatorConfig(contacts=args.contacts, seed=args.seed, lists=6, campaigns=3)
    )
    try:
        config = await prepare_folder(folder, sim, app_contacts=args.app_contacts, seed=args.seed)
        _say(f"Simulator at {sim.base_url}; sample CRM at {folder / 'app.db'}\n")
        async with wire(load_settings(config)) as w:
            w.engine.progress = Progress()
            _say(_line("Initial sync", await w.engine.cycle()))
            _say(_line("Second sync (observes what the first wrote)", await w.engine.cycle()))
            events = sim.call(lambda: sim.world.step(args.changes))
            kinds: dict[str, int] = {}
            for e in events:
                kinds[e.kind] = kinds.get(e.kind, 0) + 1
            app_optout = _app_changes(folder / "app.db")
            _say(f"\nMeanwhile in Constant Contact: {dict(sorted(kinds.items()))}")
            _say(f"Meanwhile in the CRM: a rename, and {app_optout} unsubscribed by phone")
            _say(
                "(Each sync lists what changed since its checkpoint, reaching back by its "
                "look-back\n (overlap_seconds, five minutes by default) for late commits and "
                "clock skew: this soon\n after the first sync, that lists again the contacts it "
                "wrote. Only what differs from\n the last observation becomes an event or a "
                "command.)\n"
            )
            _say(_line("Incremental sync", await w.engine.cycle()))
            _say(_line("Incremental sync", await w.engine.cycle()))
            quiet = await w.engine.cycle()
            _say(
                _line("Quiet sync (no contact changed; late opens and clicks still arrive)", quiet)
            )
            optouts = [o for o in await audit_optouts(w.log) if o.state == "confirmed"]
            if optouts:
                o = optouts[-1]
                _say(f"\nThe audit of {o.email}, who opted out along the way:")
                rows = [
                    [
                        str(v) if v is not None else ""
                        for v in (
                            o.store,
                            o.happened_at,
                            o.source,
                            o.reason,
                            o.seen_at,
                            o.command_id,
                            o.applied_at,
                            o.confirmed_at,
                            f"{o.latency_seconds:.1f}s" if o.latency_seconds is not None else "",
                        )
                    ]
                ]
                _say(
                    table(
                        [
                            "store",
                            "happened",
                            "by",
                            "reason",
                            "seen",
                            "command",
                            "applied",
                            "confirmed",
                            "latency",
                        ],
                        rows,
                    )
                )
                _say("\nHis or her whole history across both stores:")
                hist = await contact_history(w.log, o.email)
                _say(
                    table(
                        ["position", "recorded", "store", "what"],
                        [[str(h.position), h.recorded_at, h.store, h.summary] for h in hist],
                    )
                )
            head = await w.log.head()
            _say(f"\nThe log holds {head.position:,} events; head hash {head.hash[:16]}...")
        if keep:
            _say(
                f"\nEverything is in {folder}. Go on with, for example:\n"
                f"  ccsync status --config {config}\n"
                f"  ccsync audit opt-outs --config {config}\n"
                f"  ccsync audit blocked --config {config}\n"
                f"  ccsync replay --check --config {config}\n"
                f"  ccsync log verify --log {folder / 'ccsync.db'}\n"
                "(the simulator stops with the demo: `ccsync sync` there needs a new one)"
            )
        # Campaign engagement keeps arriving (opens and clicks come hours after a send), so a
        # quiet cycle may still record tracking; any other command would be drift.
        return 0 if set(quiet.commands) <= {"tracking.record"} else 1
    finally:
        sim.stop()
        if tmp is not None:
            tmp.cleanup()
