"""Campaign tracking: six reports per campaign activity, newest first, down to what we have."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from adapters.constant_contact import CtctAdapter
from engine.ports import TrackingPage

from .conftest import Env

pytestmark = pytest.mark.asyncio
SIX = ("em_sends", "em_opens", "em_clicks", "em_bounces", "em_forwards", "em_optouts")


async def collect(ctct: CtctAdapter, resume: str | None, bound: datetime) -> list[TrackingPage]:
    return [p async for p in ctct.observe_tracking(resume, bound)]


def recorded(env: Env) -> int:
    return sum(len(recs[k]) for recs in env.sim.tracking.records.values() for k in SIX)


def keys(pages: list[TrackingPage]) -> set[tuple[str, str, str, datetime]]:
    return {
        (a.campaign_activity_id, a.kind, a.contact_id, a.created_time)
        for p in pages
        for a in p.activities
    }


async def test_first_run_reads_every_activity_of_every_campaign(make_env: Any) -> None:
    env: Env = await make_env(contacts=1200)
    async with await env.open() as ctct:
        pages = await collect(ctct, None, env.sim.clock.now())
    assert sum(len(p.activities) for p in pages) == recorded(env)
    kinds = {a.kind for p in pages for a in p.activities}
    assert {"send", "open", "click", "bounce"} <= kinds
    click = next(a for p in pages for a in p.activities if a.kind == "click")
    assert click.details["link_url"].startswith("http") and click.campaign_name
    assert all(a.email == a.email.strip().casefold() for p in pages for a in p.activities)
    assert env.recorder.paths().count("/emails") == 1


async def test_next_run_reads_only_whats_new(make_env: Any) -> None:
    env: Env = await make_env(contacts=400)
    async with await env.open() as ctct:
        first = await collect(ctct, None, env.sim.clock.now())
        env.sim.clock.advance(timedelta(minutes=10))
        primary = next(iter(env.sim.tracking.records))
        contact = next(c for c in env.sim.account.contacts if not c.deleted)
        env.sim.tracking.record(primary, contact, "em_opens", {"device_type": "mobile"})
        before = ctct.requests_made
        second = await collect(ctct, first[-1].resume, env.sim.clock.now() + timedelta(seconds=1))
        spent = ctct.requests_made - before
    new = keys(second) - keys(first)
    assert len(new) == 1
    (ca, kind, cid, _) = new.pop()
    assert (ca, kind, cid) == (primary, "open", contact.contact_id)
    campaigns = len(env.sim.tracking.campaigns)
    assert spent == 1 + campaigns + campaigns * 6  # /emails, details, one page per report


async def test_a_crash_mid_walk_rereads_instead_of_skipping(make_env: Any) -> None:
    env: Env = await make_env(contacts=1200)
    bound = env.sim.clock.now()
    async with await env.open() as ctct:
        first: list[TrackingPage] = []
        async for page in ctct.observe_tracking(None, bound):
            first.append(page)
            break  # died after page 1 of the first campaign activity's sends walk (of 3)
        rest = await collect(ctct, first[-1].resume, bound)
    assert len(first[0].activities) == 500
    assert keys(first) <= keys(rest)  # the unfinished walk was read again from the top
    assert len(keys(first) | keys(rest)) == recorded(env)


async def test_tracking_yields_to_contact_sync_when_the_budget_runs_low(make_env: Any) -> None:
    env: Env = await make_env(contacts=50, tracking_reserve=20_000)
    async with await env.open() as ctct:
        assert await collect(ctct, None, env.sim.clock.now()) == []
        assert ctct.requests_made == 0


async def test_tracking_switched_off_sends_nothing(make_env: Any) -> None:
    env: Env = await make_env(contacts=50, tracking=False)
    async with await env.open() as ctct:
        assert await collect(ctct, None, env.sim.clock.now()) == []
        assert ctct.requests_made == 0
