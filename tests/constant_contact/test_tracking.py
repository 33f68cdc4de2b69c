"""Campaign tracking: six reports per campaign activity, newest first, down to what we have."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.constant_contact import CtctAdapter
from adapters.constant_contact.tracking import REPORTS, TOKEN_EVERY
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
    # The listing, the counts of every campaign's activity (ten to a request), and the one
    # report whose count moved: not the details again, nor the other reports.
    assert spent == 3
    assert env.recorder.paths()[-3:] == [
        "/emails",
        f"/reports/stats/email_campaign_activities/{','.join(primaries(env))}",
        f"/reports/email_reports/{primary}/tracking/opens",
    ]


def report_marks(resume: str) -> dict[str, list[Any]]:
    """A token's marks by ``"<campaign activity>/<kind>"`` (version 3: six to an activity)."""
    kinds = [kind for _, kind in REPORTS]
    token = json.loads(resume)
    return {f"{a}/{kinds[i]}": m for a, ms in token["r"].items() for i, m in enumerate(ms) if m}


def iso(us: int | None) -> str | None:
    """A version 3 time (microseconds since 1970) as the ISO text of versions 1 and 2."""
    if us is None:
        return None
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat()


def primaries(env: Env) -> list[str]:
    """The tracked (primary email) activity of each campaign, newest campaign first."""
    camps = reversed(env.sim.tracking.campaigns.values())
    return [a for c in camps for a, role in c.activities if role == "primary_email"]


async def test_a_run_with_nothing_new_reads_the_counts_and_no_report(make_env: Any) -> None:
    env: Env = await make_env(contacts=400)
    async with await env.open() as ctct:
        first = await collect(ctct, None, env.sim.clock.now())
        env.sim.clock.advance(timedelta(minutes=15))
        before = ctct.requests_made
        again = await collect(ctct, first[-1].resume, env.sim.clock.now())
        assert (again, ctct.requests_made - before) == ([], 2)


async def test_news_the_counts_miss_is_read_after_the_recheck(make_env: Any) -> None:
    """A reader who forwards twice: Constant Contact counts forwarders, so the count stays and
    the run after skips the report; a day later every report is read again, and finds it."""
    env: Env = await make_env(contacts=400)
    sim = env.sim
    async with await env.open() as ctct:
        first = await collect(ctct, None, sim.clock.now())
        primary = next(a for a in primaries(env) if sim.tracking.records[a]["em_forwards"])
        forwarded = sim.tracking.records[primary]["em_forwards"]
        reader = sim.account.by_id[forwarded[0].contact_id]
        sim.clock.advance(timedelta(minutes=15))
        sim.tracking.record(primary, reader, "em_forwards")
        soon = await collect(ctct, first[-1].resume, sim.clock.now())
        assert soon == []
        sim.clock.advance(timedelta(hours=24))  # (the access token expires and is refreshed)
        before = len(env.recorder.paths())
        later = await collect(ctct, first[-1].resume, sim.clock.now())
        walked = [p for p in env.recorder.paths()[before:] if "/email_reports/" in p]
        assert len(walked) == len(set(walked)) == len(primaries(env)) * 6  # every report, once
        details = [p for p in env.recorder.paths()[before:] if p.startswith("/emails/")]
        assert len(details) == len(sim.tracking.campaigns)  # (a resend it was not told of)
    [(activity, kind, contact, _)] = keys(later) - keys(first)
    assert (activity, kind, contact) == (primary, "forward", reader.contact_id)


async def test_reports_read_together_are_rechecked_over_hours_not_in_one_run(
    make_env: Any,
) -> None:
    """A first run reads every report; their daily rechecks then come due between 18 and 24
    hours later, a few at a run, each once."""
    env: Env = await make_env(contacts=400)
    sim = env.sim
    async with await env.open() as ctct:
        resume = (await collect(ctct, None, sim.clock.now()))[-1].resume
        sim.clock.advance(timedelta(hours=18) - timedelta(minutes=15))
        per_run = []
        for _ in range(6 * 4 + 1):  # 18 to 24 hours on, every 15 minutes
            sim.clock.advance(timedelta(minutes=15))
            before = len(env.recorder.paths())
            pages = await collect(ctct, resume, sim.clock.now())
            resume = pages[-1].resume if pages else resume
            walked = [p for p in env.recorder.paths()[before:] if "/email_reports/" in p]
            per_run.append(len(walked))
    reports = len(primaries(env)) * 6
    assert sum(per_run) == reports and max(per_run) < reports / 2, per_run


async def test_recheck_zero_reads_every_report_at_every_run(make_env: Any) -> None:
    env: Env = await make_env(contacts=400, tracking_recheck_hours=0)
    async with await env.open() as ctct:
        first = await collect(ctct, None, env.sim.clock.now())
        before = ctct.requests_made
        await collect(ctct, first[-1].resume, env.sim.clock.now())
        spent = ctct.requests_made - before
    campaigns = len(env.sim.tracking.campaigns)
    assert spent == 1 + campaigns + campaigns * 6  # the listing, details, one page per report


async def test_a_campaign_updated_since_is_read_again(make_env: Any) -> None:
    """A campaign's activities are read once, and again when its ``updated_at`` moves (a
    resend adds an activity)."""
    env: Env = await make_env(contacts=400)
    sim = env.sim
    async with await env.open() as ctct:
        first = await collect(ctct, None, sim.clock.now())
        details = [p for p in env.recorder.paths() if p.startswith("/emails/")]
        assert len(details) == len(sim.tracking.campaigns)
        sim.clock.advance(timedelta(minutes=15))
        camp = next(iter(sim.tracking.campaigns.values()))
        camp.updated_at = sim.clock.now_ms()
        # Nothing new in any report: the detail read is the run's one page, and its token
        # keeps it, so the run after does not read it again.
        [page] = await collect(ctct, first[-1].resume, sim.clock.now())
        assert page.request.startswith(f"GET /v3/emails/{camp.campaign_id}")
        sim.clock.advance(timedelta(minutes=15))
        assert await collect(ctct, page.resume, sim.clock.now()) == []
    details = [p for p in env.recorder.paths() if p.startswith("/emails/")]
    assert details[len(sim.tracking.campaigns) :] == [f"/emails/{camp.campaign_id}"]


async def test_a_version_1_token_resumes_where_it_stood(make_env: Any) -> None:
    """A token written before the counts were read (newest times only) is taken as it is:
    every report is walked once, down to its newest time, so nothing is read twice."""
    env: Env = await make_env(contacts=400)
    async with await env.open() as ctct:
        first = await collect(ctct, None, env.sim.clock.now())
        marks = report_marks(first[-1].resume)
        v1 = {"v": 1, "marks": {k: iso(m[0]) for k, m in marks.items() if m[0]}}
        again = await collect(ctct, json.dumps(v1), env.sim.clock.now())
    walks = [p for p in again if "/email_reports/" in p.request]
    assert len(walks) == len(primaries(env)) * 6  # one page per report, nothing new on any
    # Each walk stops at its newest time (taking that record again: harmless), where a token
    # not understood would read every record again.
    assert keys(again) <= keys(first)
    assert sum(len(p.activities) for p in walks) <= len(walks) < len(keys(first))


async def test_a_version_2_token_is_read_and_a_version_3_one_written_in_its_place(
    make_env: Any,
) -> None:
    """Version 2 (a key and three ISO times a report) is what a daemon upgraded from the
    fourteenth session has in its log: it must resume exactly where it stood (the counts
    read, no report walked), and the next token written is the compact version 3."""
    env: Env = await make_env(contacts=400)
    async with await env.open() as ctct:
        first = await collect(ctct, None, env.sim.clock.now())
        token = json.loads(first[-1].resume)
        assert token["v"] == 3
        marks, memos = report_marks(first[-1].resume), token["c"]
        v2 = {
            "v": 2,
            "reports": {k: [iso(n), c, iso(w)] for k, (n, c, w) in marks.items()},
            "campaigns": {k: [iso(u), n, acts, iso(r)] for k, (u, n, acts, r) in memos.items()},
        }  # fmt: skip
        assert len(json.dumps(v2)) > 2 * len(first[-1].resume)
        env.sim.clock.advance(timedelta(minutes=15))
        before = ctct.requests_made
        assert await collect(ctct, json.dumps(v2), env.sim.clock.now()) == []
        assert ctct.requests_made - before == 2  # the listing and the counts: nothing walked
        primary = primaries(env)[0]
        contact = next(c for c in env.sim.account.contacts if not c.deleted)
        env.sim.tracking.record(primary, contact, "em_opens", {"device_type": "mobile"})
        env.sim.clock.advance(timedelta(minutes=15))
        [page] = await collect(ctct, json.dumps(v2), env.sim.clock.now())
        # (the walk stops at its newest time, taking that record again: harmless)
        [new] = keys([page]) - keys(first)
        assert (new[0], new[1], new[2]) == (primary, "open", contact.contact_id)
        assert json.loads(page.resume)["v"] == 3
        assert report_marks(page.resume) != report_marks(first[-1].resume)


async def test_a_crash_mid_walk_rereads_instead_of_skipping(make_env: Any) -> None:
    env: Env = await make_env(contacts=1200)
    bound = env.sim.clock.now()
    async with await env.open() as ctct:
        first: list[TrackingPage] = []
        async for page in ctct.observe_tracking(None, bound):
            first.append(page)
            if "/email_reports/" in page.request:
                break  # died after page 1 of the first campaign activity's sends walk (of 3)
        rest = await collect(ctct, first[-1].resume, bound)
    assert len(first[-1].activities) == 500
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


async def test_the_token_moves_with_the_last_page_and_every_few_pages_of_a_long_run(
    make_env: Any,
) -> None:
    """The token carries a mark per report of every campaign: recorded with every page, it
    was most of what a daemon's log grew by. It moves every TOKEN_EVERY pages and with the
    last; a run resumed from a page between two moves loses nothing, and reads again only
    what came after the first of them."""
    env: Env = await make_env(contacts=1200)
    bound = env.sim.clock.now()
    async with await env.open() as ctct:
        pages = await collect(ctct, None, bound)
        moves = [i for i in range(1, len(pages)) if pages[i].resume != pages[i - 1].resume]
        assert len(pages) > TOKEN_EVERY
        assert moves[:-1] == list(range(TOKEN_EVERY - 1, len(pages) - 1, TOKEN_EVERY))
        assert moves[-1] == len(pages) - 1
        last_move = moves[-2]
        again = await collect(ctct, pages[-2].resume, bound)  # died before the last page
        assert keys(pages[: last_move + 1]) | keys(again) == keys(pages)
        assert len(again) < len(pages) - last_move + 1 < len(pages)
        after = await collect(ctct, pages[-1].resume, bound)
        assert not any(p.activities for p in after)
