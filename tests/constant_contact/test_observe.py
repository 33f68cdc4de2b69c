"""Observing contacts and lists against the simulator: full fetch, resume, the three sweeps."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from adapters.constant_contact import CtctAdapter
from adapters.ctct_simulator import FaultConfig
from engine.model import ContactRecord
from engine.ports import Page

from .conftest import Env

pytestmark = pytest.mark.asyncio


async def collect(adapter: CtctAdapter, resume: str | None, bound: datetime) -> list[Page]:
    return [p async for p in adapter.observe_contacts(resume, bound)]


def seen(pages: list[Page]) -> dict[str, ContactRecord]:
    return {c.store_id: c for p in pages for c in p.contacts}


async def full_then_checkpoint(env: Env, ctct: CtctAdapter) -> str:
    pages = await collect(ctct, None, env.sim.clock.now())
    return pages[-1].resume


async def test_first_run_fetches_every_contact_500_a_page(make_env: Any) -> None:
    env: Env = await make_env(contacts=1200)
    async with await env.open() as ctct:
        pages = await collect(ctct, None, env.sim.clock.now())
        requests = ctct.requests_made
    n = len(env.sim.account.contacts)
    assert len(seen(pages)) + sum(len(p.rejected) for p in pages) == n
    assert len(pages) == requests == math.ceil(n / 500)
    assert all(p.full_scan for p in pages)
    assert "status=all" in pages[0].request and "limit=500" in pages[0].request
    assert all(len(p.content_hash) == 64 for p in pages)


async def test_a_crash_mid_fetch_resumes_after_the_last_committed_page(make_env: Any) -> None:
    env: Env = await make_env(contacts=1600)
    bound = env.sim.clock.now()
    async with await env.open() as ctct:
        first: list[Page] = []
        async for page in ctct.observe_contacts(None, bound):
            first.append(page)
            if len(first) == 2:
                break  # the process dies after committing page 2
    async with await env.open() as ctct:
        rest = await collect(ctct, first[-1].resume, bound + timedelta(minutes=1))
    assert len(first) + len(rest) == math.ceil(len(env.sim.account.contacts) / 500)
    assert set(seen(first)).isdisjoint(seen(rest))
    assert len(seen(first) | seen(rest)) + sum(len(p.rejected) for p in first + rest) == len(
        env.sim.account.contacts
    )


async def test_incremental_sweeps_see_edits_unsubscribes_and_deletions(make_env: Any) -> None:
    env: Env = await make_env(contacts=300)
    acct = env.sim.account
    async with await env.open() as ctct:
        token = await full_then_checkpoint(env, ctct)
        env.sim.clock.advance(seconds=60)
        live = [c for c in acct.contacts if not c.deleted and c.permission != "unsubscribed"]
        edited, unsub, gone = live[0], live[1], live[2]
        acct.edit_contact(edited.contact_id, first_name="Renamed")
        old_updated = unsub.updated_at
        acct.unsubscribe(unsub.contact_id, reason="no more", source="Contact")
        assert unsub.updated_at == old_updated  # pitfall 1: updated_at did not move
        acct.delete_contact(gone.contact_id)
        env.sim.clock.advance(seconds=1)
        before = ctct.requests_made
        pages = await collect(ctct, token, env.sim.clock.now())
        spent = ctct.requests_made - before
    got = seen(pages)
    assert got[edited.contact_id].fields["first_name"] == "Renamed"
    assert got[unsub.contact_id].permission.status == "unsubscribed"
    assert got[unsub.contact_id].permission.reason == "no more"
    assert got[gone.contact_id].deleted
    assert spent == 3  # one page per sweep: proportional to the changes
    assert not any(p.full_scan for p in pages)


async def test_an_unsubscribe_that_did_not_move_updated_at_is_observed(make_env: Any) -> None:
    """Pitfall 1: updated_after alone misses it; the optout_after sweep does not."""
    env: Env = await make_env(contacts=50)
    acct = env.sim.account
    async with await env.open() as ctct:
        token = await full_then_checkpoint(env, ctct)
        env.sim.clock.advance(timedelta(hours=1))
        target = next(c for c in acct.contacts if c.permission != "unsubscribed" and not c.deleted)
        acct.unsubscribe(target.contact_id, reason="moved away", source="Contact")
        pages = await collect(ctct, token, env.sim.clock.now())
    by_sweep = {p.request: seen([p]) for p in pages}
    updated = next(v for k, v in by_sweep.items() if "updated_after" in k and "status" not in k)
    optout = next(v for k, v in by_sweep.items() if "optout_after" in k)
    assert target.contact_id not in updated
    rec = optout[target.contact_id]
    assert rec.permission.status == "unsubscribed"
    assert rec.permission.source == "Contact"


async def test_skewed_server_clock_is_covered_by_the_overlap(make_env: Any) -> None:
    """Writes stamped 2 minutes in the past (server clock behind) are still seen."""
    env: Env = await make_env(contacts=40, faults=FaultConfig(skew_seconds=120))
    acct = env.sim.account
    async with await env.open() as ctct:
        token = await full_then_checkpoint(env, ctct)
        env.sim.clock.advance(seconds=5)
        target = next(c for c in acct.contacts if not c.deleted)
        acct.edit_contact(target.contact_id, last_name="Skewed")
        pages = await collect(ctct, token, env.sim.clock.now())
    assert seen(pages)[target.contact_id].fields["last_name"] == "Skewed"


async def test_repeated_items_across_pages_are_harmless(make_env: Any) -> None:
    env: Env = await make_env(contacts=1100, faults=FaultConfig(repeat_rate=1.0, seed=3))
    async with await env.open() as ctct:
        pages = await collect(ctct, None, env.sim.clock.now())
    ids = [c.store_id for p in pages for c in p.contacts] + [
        r.record for p in pages for r in p.rejected
    ]
    assert len(set(ids)) == len(env.sim.account.contacts)
    assert pages[-1].resume.startswith("{")


async def test_faults_are_retried_and_nothing_is_lost(make_env: Any) -> None:
    faults = FaultConfig(error_rate=0.25, reset_rate=0.1, truncate_rate=0.1, seed=11)
    env: Env = await make_env(contacts=2600, faults=faults, retries=12)
    async with await env.open() as ctct:
        pages = await collect(ctct, None, env.sim.clock.now())
        retries = ctct.client.retries_made
    n = len(env.sim.account.contacts)
    assert len(seen(pages)) + sum(len(p.rejected) for p in pages) == n
    assert retries > 0


async def test_lists_are_read_in_full_deleted_ones_included(make_env: Any) -> None:
    env: Env = await make_env(contacts=10)
    acct = env.sim.account
    doomed = next(iter(acct.lists))
    acct.delete_list(doomed)
    async with await env.open() as ctct:
        request, lists = await ctct.observe_lists()
    assert request.startswith("GET /v3/contact_lists")
    assert {lst.store_id for lst in lists} == set(acct.lists)
    assert next(lst for lst in lists if lst.store_id == doomed).deleted


async def test_an_expired_cursor_in_the_checkpoint_restarts_that_phase(make_env: Any) -> None:
    env: Env = await make_env(contacts=700)
    bound = env.sim.clock.now()
    stale = msgspec.json.encode(
        {"phase": "full", "start": bound, "next": "/v3/contacts?cursor=expired"}
    ).decode()
    async with await env.open() as ctct:
        pages = await collect(ctct, stale, bound)
    assert len(seen(pages)) + sum(len(p.rejected) for p in pages) == len(env.sim.account.contacts)
    assert all(p.full_scan for p in pages)


async def test_a_malformed_record_is_rejected_by_id_and_field_the_page_goes_on(
    make_env: Any,
) -> None:
    env: Env = await make_env(contacts=300)
    bad = next(c for c in env.sim.account.contacts if not c.deleted)
    env.sim.account.edit_contact(bad.contact_id, first_name="x" * 60)  # API limit: 50
    async with await env.open() as ctct:
        pages = await collect(ctct, None, env.sim.clock.now())
    rejected = [r for p in pages for r in p.rejected]
    assert [(r.record, r.field) for r in rejected] == [(bad.contact_id, "first_name")]
    assert len(seen(pages)) == len(env.sim.account.contacts) - 1
