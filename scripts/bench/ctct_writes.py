"""Benchmark: the requests the Constant Contact adapter spends on writes, beside the minimum.

Against the simulator in its own process with its rate limits ON (4/s, the daily quota), the
adapter applies one batch (one sync cycle's commands) for N changed contacts of a realistic mix,
and the script prints the requests it sent, by endpoint, and per 1,000 changed contacts, next to
the least the v3 API allows for the same mix:

    .venv/bin/python scripts/bench/ctct_writes.py [--contacts 5000] [--changed 1000] [--repeat 2]

The mix (shares of the changed contacts; each contact gets one kind of change, so no two
commands of the batch need ordering and one round of activities is enough):
  48% profile updates of existing contacts (UpsertContact, fields set),  10% new contacts
  (UpsertContact, joining one of two lists), 15% list adds and 10% list removes (one of four
  lists each), 5% unsubscribes, 5% field clears (UpsertContact with a field set to None),
  5% an unsubscribe and a profile change of the same contact (two commands), 2% deletes.

The minimum, per kind of change, and why the API allows no less:
  * upserts that an import can carry: contacts_json_import takes <= 40,000 rows (< 4 MB) and one
    ``list_ids`` for all its rows, and joins every row to those lists: sum over distinct list
    sets of ceil(rows / 40,000) POSTs. New contacts: one set per set of lists they join. A
    profile update of an existing contact must be imported through a list it is already on
    (when commands say which: ``UpsertContact.member_of``; before that, through
    ``ctct.import_list_id``): the fewest lists that cover them all, beside those new contacts
    join. One on no list cannot be imported without joining one: GET + PUT, as below.
  * list adds/removes: add/remove_list_memberships take <= 500 contact_ids and apply every
    list_id to every id; here each contact changes one list, so an activity holds one list:
    sum over (kind, list) of ceil(ids / 500) POSTs.  Deletes: ceil(ids / 500) POSTs.
  * unsubscribes and field clears: no bulk path. Imports ignore blank values (reference §1.6),
    so they cannot clear; the only bulk unsubscribe in v3 is POST /partner/accounts/{id}/
    contacts/unsubscribe, for technology partners' credentials, not an account's OAuth token.
    PUT /contacts/{id} nulls every core field it omits (pitfall 8), so it needs the contact as
    it is now: GET + PUT, 2 requests per contact (a contact with several such commands: still 2).
  * polls: every activity is asynchronous; the API gives no result without at least one status
    read after the POST, and GET /activities reads all of them at once: >= 1 poll per round.
  * GET /contact_custom_fields: 0 (the mix sets no custom fields).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _simproc import SimProcess

from adapters.constant_contact import CtctConfig, RateBudget, StoredTokens, TokenStore, open_ctct
from adapters.constant_contact.transport import Request, Response, Transport
from adapters.constant_contact.write_bodies import MAX_IMPORT_ROWS
from engine.commands import (
    AddToList,
    Command,
    DeleteContact,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
)
from engine.logging import configure_logging
from engine.model import ContactRecord

# Profile updates of existing contacts carry the lists they are on (engine change under way):
# the writer then imports each through a list it is already on instead of ctct.import_list_id.
MEMBER_OF = "member_of" in UpsertContact.__struct_fields__
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_IDS = 500


class Counting:
    """A transport wrapper counting requests by method and path template."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.by_endpoint: Counter[str] = Counter()

    async def send(self, request: Request) -> Response:
        path = request.url.split("/v3", 1)[-1].split("?", 1)[0]
        self.by_endpoint[f"{request.method} {_ID.sub('{id}', path)}"] += 1
        return await self.inner.send(request)


def least_cover(sets: list[set[str]], free: set[str]) -> tuple[str, ...]:
    """The lists such that every set holds one, adding the fewest imports beyond those the
    batch makes anyway (``free``: the lists new contacts join). Exact: accounts have few."""
    lists = sorted(set().union(*sets)) if sets else []
    best: tuple[str, ...] | None = None
    for k in range(len(lists) + 1):
        for pick in itertools.combinations(lists, k):
            if all(not s.isdisjoint(pick) for s in sets) and (
                best is None or len(set(pick) - free) < len(set(best) - free)
            ):
                best = pick
    return best or ()


def mix(
    contacts: list[ContactRecord], lists: list[str], n: int, rng: random.Random
) -> tuple[list[Command], dict[str, int]]:
    """N changed contacts' commands, and the minimum requests for them (see the docstring)."""
    live = [c for c in contacts if not c.deleted and c.permission.status != "unsubscribed"]
    people = rng.sample(live, n)
    cut = [round(n * s) for s in (0.48, 0.10, 0.15, 0.10, 0.05, 0.05, 0.05)]
    k = 0
    parts = []
    for size in [*cut, n - sum(cut)]:
        parts.append(people[k : k + size])
        k += size
    profile, new, adds, removes, unsubs, clears, both, deletes = parts
    home, joins = lists[0], lists[1:3]
    cmds: list[Command] = []
    imports: Counter[tuple[str, ...]] = Counter()
    members: Counter[tuple[str, str]] = Counter()
    puts = len(unsubs) + len(clears) + len(both)
    for c in profile:
        extra = {"member_of": c.lists} if MEMBER_OF else {}
        cmds.append(UpsertContact(target="ctct", email=c.email, store_id=c.store_id,
                                  fields={"job_title": f"Role {rng.randrange(99)}"},
                                  **extra))  # fmt: skip
        if not MEMBER_OF:
            imports[(home,)] += 1  # imported with ctct.import_list_id
    if MEMBER_OF:
        # Imported through a list each is already on (an import joins its rows to its lists),
        # as few lists as cover them all; a contact on no list can only be written by PUT.
        for lst in least_cover([set(c.lists) for c in profile if c.lists], set(joins)):
            imports[(lst,)] += 1  # one import per covering list (rows are far below 40,000)
        puts += sum(1 for c in profile if not c.lists)
    for j in range(len(new)):
        lst = joins[j % 2]
        email = f"new.{j}.{rng.randrange(10**9)}@bench.example.org"
        cmds.append(UpsertContact(target="ctct", email=email, fields={"first_name": "New"},
                                  lists=(lst,)))  # fmt: skip
        imports[(lst,)] += 1
    for kind, group in (("add", adds), ("remove", removes)):
        for j, c in enumerate(group):
            if kind == "add":
                choices = [x for x in lists[3:7] if x not in c.lists] or lists[3:4]
            else:
                choices = [x for x in c.lists if x in lists[3:7]] or lists[3:4]
            lst = choices[j % len(choices)]
            cls = AddToList if kind == "add" else RemoveFromList
            cmds.append(cls(target="ctct", email=c.email, store_id=c.store_id, list_id=lst))
            members[(kind, lst)] += 1
    for c in unsubs:
        cmds.append(Unsubscribe(target="ctct", email=c.email, store_id=c.store_id, reason="bench"))
    for c in clears:
        cmds.append(UpsertContact(target="ctct", email=c.email, store_id=c.store_id,
                                  fields={"company_name": None}))  # fmt: skip
    for c in both:
        cmds.append(Unsubscribe(target="ctct", email=c.email, store_id=c.store_id, reason="bench"))
        cmds.append(UpsertContact(target="ctct", email=c.email, store_id=c.store_id,
                                  fields={"last_name": "Changed"}))  # fmt: skip
    for c in deletes:
        cmds.append(DeleteContact(target="ctct", email=c.email, store_id=c.store_id))
    minimum = {
        "POST /activities/contacts_json_import": sum(
            math.ceil(v / MAX_IMPORT_ROWS) for v in imports.values()
        )
        if not MEMBER_OF
        else len(imports),
        "POST /activities/add_list_memberships": sum(
            math.ceil(v / MAX_IDS) for (kind, _), v in members.items() if kind == "add"
        ),
        "POST /activities/remove_list_memberships": sum(
            math.ceil(v / MAX_IDS) for (kind, _), v in members.items() if kind == "remove"
        ),
        "POST /activities/contact_delete": math.ceil(len(deletes) / MAX_IDS),
        "GET /contacts/{id}": puts,
        "PUT /contacts/{id}": puts,
        "GET /activities (polls)": 1,
    }
    return cmds, minimum


def config(sim: SimProcess, token_file: Path, import_list: str, poll: float) -> CtctConfig:
    return CtctConfig.from_toml(
        {
            "client_id": sim.info["client_id"],
            "base_url": sim.base_url,
            "token_url": sim.info["token_url"],
            "token_file": str(token_file),
            "requests_per_second": 4,
            "tracking": False,
            "import_list_id": import_list,
            "activity_poll_interval": poll,
        },
        env={"CCSYNC_CTCT_CLIENT_SECRET": sim.info["client_secret"]},
    )


async def run_once(args: argparse.Namespace, seed: int) -> None:
    sim = SimProcess(args.contacts, seed=seed, lists=8)
    tmp = Path(tempfile.mkdtemp(prefix="ctct-writes-"))
    try:
        token_file = tmp / "tokens.json"
        TokenStore(token_file).save(
            StoredTokens(
                access_token=sim.info["access_token"], refresh_token=sim.info["refresh_token"]
            )
        )
        access = await sim.access()
        cfg = config(sim, token_file, access.import_list_id, args.poll_interval)
        async with await open_ctct(cfg, RateBudget(1000, 100_000)) as reader:
            contacts = [
                r
                async for p in reader.observe_contacts(None, datetime.now(UTC))
                for r in p.contacts
            ]
            _, list_records = await reader.observe_lists()
        others = sorted(x.store_id for x in list_records if x.store_id != access.import_list_id)
        lists = [access.import_list_id, *others]
        cmds, minimum = mix(contacts, lists, args.changed, random.Random(seed))
        await sim.admin("PUT", "rate_limits", {"enabled": True})
        counter: Counting | None = None

        def wrap(t: Transport) -> Transport:
            nonlocal counter
            counter = Counting(t)
            return counter

        t0 = time.perf_counter()
        async with await open_ctct(cfg, RateBudget(4, 10_000), wrap_transport=wrap) as ctct:
            outcomes = await ctct.apply(cmds)
            retried = ctct.client.retries_made
        wall = time.perf_counter() - t0
        assert counter is not None
        failed = [o for o in outcomes if not o.ok]
        sent = Counter(counter.by_endpoint)
        sent["GET /activities (polls)"] = sent.pop("GET /activities", 0) + sent.pop(
            "GET /activities/{id}", 0
        )
        total, least = sum(sent.values()), sum(minimum.values())
        per = 1000 / args.changed
        print(
            f"\nseed {seed}: {args.changed} changed contacts, {len(cmds)} commands, "
            f"{len(failed)} failed, {wall:.1f} s, {retried} retried 429s"
        )
        print(f"  {'endpoint':44s} {'sent':>6s} {'minimum':>8s}")
        for name in sorted(set(sent) | set(minimum)):
            print(f"  {name:44s} {sent.get(name, 0):6d} {minimum.get(name, 0):8d}")
        print(
            f"  {'total':44s} {total:6d} {least:8d}   per 1,000 changed contacts: "
            f"{total * per:.1f} sent, {least * per:.1f} minimum"
        )
        for o in failed[:5]:
            print(f"  failed: {o.error}")
    finally:
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    configure_logging(level="warning")
    print(f"machine: {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    print(f"simulator: {args.contacts} contacts, rate limits on (4/s), its own process")
    for r in range(args.repeat):
        await run_once(args, seed=7 + r)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--changed", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args: Any = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
