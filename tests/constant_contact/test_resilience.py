"""Rate limits, quota, tokens: the adapter keeps going where it may and stops cleanly where not."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
import pytest
import structlog

from adapters.constant_contact import CtctRequestError, RateBudget, StoredTokens, open_ctct
from adapters.ctct_simulator import FaultConfig, Simulator
from engine.commands import AddToList, Command, Unsubscribe, UpsertContact
from engine.errors import AuthorizationError, QuotaExhaustedError, RetriableError
from engine.ports import Page

from .conftest import Env

pytestmark = pytest.mark.asyncio
TOKEN_ENDPOINT = "POST /oauth2/default/v1/token"


def sim_sleeper(sim: Simulator) -> Any:
    """Backoff sleeps move the simulator's clock instead of waiting: no real time passes."""

    async def sleep(seconds: float) -> None:
        sim.clock.advance(seconds=seconds)
        await asyncio.sleep(0)

    return sleep


async def test_throttled_answers_are_retried_after_backoff(make_env: Any) -> None:
    env: Env = await make_env(
        contacts=3000, rate_limits=True, sim_kw={"frozen_clock": True}, backoff_base=0.5
    )
    # No client-side pacing: the simulator's 4/s limit answers 429 throttled and we back off.
    budget = RateBudget(1000, 10_000)
    ctct = await open_ctct(env.cfg, budget, sleep=sim_sleeper(env.sim))
    async with ctct:
        pages = [p async for p in ctct.observe_contacts(None, env.sim.clock.now())]
        retries = ctct.client.retries_made
    assert len(pages) == 6
    assert sum(len(p.contacts) + len(p.rejected) for p in pages) == len(env.sim.account.contacts)
    assert retries > 0  # 429s happened and were absorbed


async def test_quota_exhausted_mid_sync_keeps_pages_and_stops_calling(make_env: Any) -> None:
    env: Env = await make_env(contacts=2400, rate_limits=True, sim_kw={"daily_quota": 3})
    async with await env.open() as ctct:
        got: list[Page] = []

        async def sync() -> None:
            async for page in ctct.observe_contacts(None, env.sim.clock.now()):
                got.append(page)

        with pytest.raises(QuotaExhaustedError) as info:
            await sync()
        assert len(got) == 3  # what was fetched was yielded (and committed by the engine)
        status = ctct.budget_status()
        assert status.quota_exhausted_until is not None
        assert info.value.resets_at.endswith("00:00:00+00:00")
        sent = len(env.recorder.sent)
        with pytest.raises(QuotaExhaustedError):
            await ctct.observe_lists()
        assert len(env.recorder.sent) == sent  # no call until 00:00 UTC
    # the next day resumes from the last committed page
    env.sim.clock.advance(timedelta(days=1))
    async with await env.open() as ctct:
        rest = [p async for p in ctct.observe_contacts(got[-1].resume, env.sim.clock.now())]
    assert len(got) + len(rest) == 5


async def test_token_expiring_mid_run_is_refreshed_and_persisted(make_env: Any) -> None:
    env: Env = await make_env(contacts=1600)
    before = msgspec.json.decode(env.token_file.read_bytes(), type=StoredTokens)
    async with await env.open() as ctct:
        pages: list[Page] = []
        async for page in ctct.observe_contacts(None, env.sim.clock.now()):
            pages.append(page)
            if len(pages) == 1:
                env.sim.clock.advance(timedelta(hours=25))  # the access token dies server-side
        assert ctct.tokens.refreshes == 1
    assert len(pages) == 4
    after = msgspec.json.decode(env.token_file.read_bytes(), type=StoredTokens)
    assert after.refresh_token != before.refresh_token  # the rotated token was saved
    assert env.sim.requests[TOKEN_ENDPOINT] == 1


async def test_rotating_refresh_under_concurrency_exchanges_once(make_env: Any) -> None:
    """Two adapters (as two processes would) share one token file and a dead access token."""
    env: Env = await make_env(contacts=1100)
    env.sim.clock.advance(timedelta(hours=25))
    one, two = await env.open(), await env.open()
    async with one, two:

        async def run(ctct: Any) -> int:
            return len([p async for p in ctct.observe_contacts(None, env.sim.clock.now())])

        counts = await asyncio.gather(run(one), run(two), one.observe_lists(), two.observe_lists())
    assert counts[:2] == [3, 3]
    assert env.sim.requests[TOKEN_ENDPOINT] == 1
    assert one.tokens.refreshes + two.tokens.refreshes == 1


async def test_dead_refresh_token_asks_to_reauthorise_and_keeps_state(make_env: Any) -> None:
    env: Env = await make_env(contacts=10)
    stale = StoredTokens(access_token="expired", refresh_token="long-gone")
    env.token_file.write_bytes(msgspec.json.encode(stale))
    async with await env.open() as ctct:
        with pytest.raises(AuthorizationError, match="ccsync auth login") as info:
            await ctct.observe_lists()
    assert "long-gone" not in str(info.value)
    assert msgspec.json.decode(env.token_file.read_bytes(), type=StoredTokens) == stale


async def test_other_4xx_is_fatal_for_the_request_with_the_api_text(make_env: Any) -> None:
    env: Env = await make_env(contacts=10)
    async with await env.open() as ctct:
        with pytest.raises(CtctRequestError) as info:
            await ctct.client.call(
                "GET", "/contacts/00000000-0000-0000-0000-000000000000", lambda b: b
            )
    assert info.value.status == 404
    assert "not_found" in info.value.text
    assert ctct.requests_made == 1  # not retried


async def test_tokens_never_reach_a_log_line_or_a_page(make_env: Any) -> None:
    env: Env = await make_env(contacts=600, faults=FaultConfig(error_rate=0.3, seed=5))
    with structlog.testing.capture_logs() as logs:
        async with await env.open() as ctct:
            pages: list[Page] = []
            async for page in ctct.observe_contacts(None, env.sim.clock.now()):
                pages.append(page)
                env.sim.clock.advance(timedelta(hours=25))  # force a refresh on the next page
    secrets = msgspec.json.decode(env.token_file.read_bytes(), type=StoredTokens)
    assert any(e["event"] == "ctct.token_refreshed" for e in logs)
    assert any(e["event"] == "ctct.retry" for e in logs)
    text = repr(logs) + repr(pages)
    for secret in (secrets.access_token, secrets.refresh_token, env.sim.client_secret):
        assert secret and secret not in text


async def test_retries_are_bounded_then_the_failure_is_retriable(make_env: Any) -> None:
    env: Env = await make_env(contacts=10, faults=FaultConfig(error_rate=1.0, seed=2), retries=3)
    async with await env.open() as ctct:
        with pytest.raises(RetriableError, match="gave up after 4 attempts") as info:
            await ctct.observe_lists()
        assert ctct.requests_made == 4
    assert "HTTP 50" in str(info.value)


async def test_writes_survive_faults_because_every_write_is_idempotent(make_env: Any) -> None:
    faults = FaultConfig(error_rate=0.3, reset_rate=0.1, truncate_rate=0.1, seed=4)
    env: Env = await make_env(contacts=40, faults=faults, retries=12)
    acct = env.sim.account
    lst = next(lid for lid, x in acct.lists.items() if x.deleted_at is None)
    targets = [c for c in acct.contacts if not c.deleted and c.permission != "unsubscribed"][:3]
    commands: list[Command] = [
        Unsubscribe(target="ctct", email=targets[0].email.lower(), store_id=targets[0].contact_id),
        AddToList(
            target="ctct", email=targets[1].email.lower(), store_id=targets[1].contact_id,
            list_id=lst,
        ),
        UpsertContact(
            target="ctct", email=targets[2].email.lower(), store_id=targets[2].contact_id,
            fields={"job_title": "Fault-tolerant"}, lists=(lst,),
        ),
    ]  # fmt: skip
    async with await env.open() as ctct:
        outcomes = await ctct.apply(commands)
    assert all(o.ok for o in outcomes), outcomes
    assert targets[0].permission == "unsubscribed"
    assert lst in targets[1].lists
    assert targets[2].job_title == "Fault-tolerant"
