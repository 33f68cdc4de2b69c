"""OAuth (PKCE, rotating refresh tokens, device flow, 24-hour tokens) and the per-key rate
limits: pitfalls 12 and 13 of the reference."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from tests.simulator.client import SpecClient
from tests.simulator.swagger import SwaggerSpec


def _challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


async def _token(
    session: aiohttp.ClientSession, sim: Simulator, form: dict[str, str]
) -> tuple[int, dict[str, str]]:
    async with session.post(sim.token_url, data=form) as resp:
        return resp.status, await resp.json()


@pytest.mark.asyncio
async def test_pkce_code_exchange_then_rotating_refresh(
    sim: Simulator, session: aiohttp.ClientSession, spec: SwaggerSpec
) -> None:
    verifier = "v" * 64
    params = {
        "client_id": sim.client_id,
        "redirect_uri": sim.redirect_uri,
        "response_type": "code",
        "scope": "contact_data offline_access",
        "state": "xyz",
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
    }
    async with session.get(sim.authorize_url, params=params, allow_redirects=False) as resp:
        assert resp.status == 302
        location = urlsplit(resp.headers["Location"])
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    code = query["code"][0]
    exchange = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": sim.redirect_uri,
        "client_id": sim.client_id,
        "code_verifier": verifier,
    }
    status, tokens = await _token(session, sim, exchange)
    assert status == 200 and tokens["expires_in"] == 86400 and tokens["token_type"] == "Bearer"
    status, again = await _token(session, sim, exchange)  # codes are single-use
    assert status == 400 and again["error"] == "invalid_grant"

    api = SpecClient(session, sim.root_url, spec, tokens["access_token"])
    assert (await api.get("/v3/contact_lists")).status == 200

    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": sim.client_id,
    }
    status, rotated = await _token(session, sim, refresh)
    assert status == 200 and rotated["refresh_token"] != tokens["refresh_token"]
    status, dead = await _token(session, sim, refresh)  # a used refresh token is dead
    assert status == 400
    assert dead == {
        "error": "invalid_grant",
        "error_description": "unknown, invalid, or expired refresh token",
    }


@pytest.mark.asyncio
async def test_wrong_verifier_and_confidential_basic_auth(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    params = {
        "client_id": sim.client_id,
        "redirect_uri": sim.redirect_uri,
        "response_type": "code",
        "code_challenge": _challenge("right"),
        "code_challenge_method": "S256",
    }
    async with session.get(sim.authorize_url, params=params, allow_redirects=False) as resp:
        code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": sim.redirect_uri,
            "client_id": sim.client_id, "code_verifier": "wrong"}  # fmt: skip
    status, body = await _token(session, sim, form)
    assert status == 400 and body["error"] == "invalid_grant"

    basic = base64.b64encode(f"{sim.client_id}:not-the-secret".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    async with session.post(
        sim.token_url, data={"grant_type": "refresh_token"}, headers=headers
    ) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"


@pytest.mark.asyncio
async def test_device_flow(sim: Simulator, session: aiohttp.ClientSession) -> None:
    async with session.post(
        sim.device_authorize_url,
        data={"client_id": sim.client_id, "scope": "contact_data offline_access"},
    ) as resp:
        start = await resp.json()
    status, tokens = await _token(session, sim, {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": start["device_code"],
        "client_id": sim.client_id,
    })  # fmt: skip
    assert status == 200 and "refresh_token" in tokens


@pytest.mark.asyncio
async def test_tokens_expire_after_24_hours_with_a_single_object_401(
    sim: Simulator, api: SpecClient
) -> None:
    assert (await api.get("/v3/contacts")).status == 200
    sim.clock.advance(timedelta(hours=24, seconds=1))
    reply = await api.get("/v3/contacts")
    assert reply.status == 401
    assert reply.body == {"error_key": "unauthorized", "error_message": "Unauthorized"}
    bogus = await api.call("GET", "/v3/contacts", token="not-a-token")
    assert bogus.status == 401


@pytest.mark.asyncio
async def test_rate_limits_per_second_and_daily_quota_reset_at_utc_midnight(
    spec: SwaggerSpec,
) -> None:
    config = SimulatorConfig(
        contacts=20, lists=1, campaigns=0, rate_limits=True, daily_quota=10, frozen_clock=True
    )
    async with run_simulator(config) as sim, aiohttp.ClientSession() as session:
        api = SpecClient(session, sim.root_url, spec, sim.issue_tokens().access_token)
        statuses = [(await api.get("/v3/contact_lists")).status for _ in range(5)]
        assert statuses == [200, 200, 200, 200, 429]
        throttled = await api.get("/v3/contact_lists")
        assert throttled.body == {"error_key": "throttled", "error_message": "Too Many Requests"}

        for _ in range(6):  # one request per simulated second spends the rest of the quota
            sim.clock.advance(seconds=1)
            assert (await api.get("/v3/contact_lists")).status == 200
        sim.clock.advance(seconds=1)
        spent = await api.get("/v3/contact_lists")
        assert spent.status == 429
        assert spent.body == {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}
        assert sim.quota()["remaining"] == 0

        # the quota is per application key: a second token of the same client is refused too
        other = await api.call("GET", "/v3/contact_lists", token=sim.issue_tokens().access_token)
        assert other.status == 429

        now = sim.clock.now_ms()
        sim.clock.advance(seconds=(86_400_000 - now % 86_400_000) / 1000)  # to 00:00 UTC
        assert (await api.get("/v3/contact_lists")).status == 200


@pytest.mark.asyncio
async def test_token_endpoint_allows_one_request_per_second() -> None:
    config = SimulatorConfig(contacts=1, lists=0, campaigns=0, rate_limits=True, frozen_clock=True)
    async with run_simulator(config) as sim, aiohttp.ClientSession() as session:
        first = sim.issue_tokens().refresh_token
        second = sim.issue_tokens().refresh_token
        assert first and second
        form = {"grant_type": "refresh_token", "client_id": sim.client_id}
        status, _ = await _token(session, sim, {**form, "refresh_token": first})
        assert status == 200
        status, body = await _token(session, sim, {**form, "refresh_token": second})
        assert status == 429 and body["error_key"] == "throttled"
        sim.clock.advance(seconds=1)
        status, _ = await _token(session, sim, {**form, "refresh_token": second})
        assert status == 200


@pytest.mark.asyncio
async def test_scopes_gate_campaign_data(
    sim: Simulator, session: aiohttp.ClientSession, spec: SwaggerSpec
) -> None:
    narrow = sim.issue_tokens("contact_data offline_access").access_token
    api = SpecClient(session, sim.root_url, spec, narrow)
    assert (await api.get("/v3/contacts")).status == 200
    reply = await api.get("/v3/emails")
    assert reply.status == 403 and "campaign_data" in reply.body[0]["error_message"]
