"""A list's membership as it was at a past time, rebuilt from the log.

    .venv/bin/python scripts/list_as_of.py --config ccsync.toml --list "Newsletter" \\
        --as-of 2026-10-01T00:00:00Z [--store ctct|app] > members.csv

The log is folded up to the last event recorded before --as-of into a temporary file (the live
state is not touched), and the members of the list (by id or name, in the chosen store) are
printed as CSV: email, the store's contact id, permission at that time.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import aiosqlite

from engine.log import EventLog
from engine.settings import load_settings
from projections.projector import rebuild
from projections.runner import decode_contact, decode_list


async def members(config: str, name: str, as_of: datetime, store: str) -> int:
    settings = load_settings(config)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "as_of.db"
        async with await EventLog.open(settings.log_path, writer=False) as log:
            await rebuild(log, out, stop=await log.position_at(as_of))
        async with aiosqlite.connect(out) as db:
            lists = [decode_list(r[0]) for r in await db.execute_fetchall(
                "SELECT state FROM p_lists WHERE store = ?", (store,))]  # fmt: skip
            ids = {lst.store_id for lst in lists if name in (lst.store_id, lst.name)}
            if not ids:
                print(f"no list {name!r} in {store} as of {as_of.isoformat()}", file=sys.stderr)
                return 1
            w = csv.writer(sys.stdout, lineterminator="\n")
            w.writerow(["email", "contact_id", "permission"])
            async with db.execute("SELECT state FROM p_contacts WHERE store = ?", (store,)) as cur:
                async for (blob,) in cur:
                    c = decode_contact(blob)
                    if not c.deleted and ids & set(c.lists):
                        w.writerow([c.email, c.store_id, c.permission.status])
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--list", required=True, help="the list's id or name")
    p.add_argument("--as-of", required=True, type=datetime.fromisoformat, help="ISO-8601 time")
    p.add_argument("--store", choices=("ctct", "app"), default="ctct")
    args = p.parse_args()
    if args.as_of.tzinfo is None:
        p.error("--as-of needs a time zone, e.g. 2026-10-01T00:00:00Z")
    sys.exit(asyncio.run(members(args.config, args.list, args.as_of, args.store)))


if __name__ == "__main__":
    main()
