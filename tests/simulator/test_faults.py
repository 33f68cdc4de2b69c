"""Fault injection: seeded, so the same requests see the same faults."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from adapters.ctct_simulator import FaultConfig, Simulator, SimulatorConfig, run_simulator
from adapters.ctct_simulator.clock import iso_ms
from tests.simulator.client import SpecClient, check_error_shape
from tests.simulator.swagger import SwaggerSpec


@pytest_asyncio.fixture
async def small() -> AsyncIterator[Simulator]:
    async with run_simulator(SimulatorConfig(contacts=120, seed=3, lists=2, campaigns=0)) as s:
        yield s


async def _statuses(sim: Simulator, n: int) -> list[int]:
    headers = {"Authorization": f"Bearer {sim.issue_tokens().access_token}"}
    out = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(n):
            async with session.get(f"{sim.base_url}/contact_lists") as resp:
                out.append(resp.status)
                if resp.status >= 500:
                    check_error_shape(resp.status, await resp.json())
    return out


@pytest.mark.asyncio
async def test_server_errors_are_a_seeded_fraction(small: Simulator) -> None:
    small.set_faults(FaultConfig(error_rate=0.3, seed=11))
    first = await _statuses(small, 60)
    small.set_faults(FaultConfig(error_rate=0.3, seed=11))
    again = await _statuses(small, 60)
    assert first == again  # same seed, same faults
    errors = [s for s in first if s != 200]
    assert set(errors) == {500, 503}
    assert 5 <= len(errors) <= 35
    small.set_faults(FaultConfig())
    assert set(await _statuses(small, 5)) == {200}


@pytest.mark.asyncio
async def test_truncated_json_and_reset_connections(small: Simulator) -> None:
    headers = {"Authorization": f"Bearer {small.issue_tokens().access_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        small.set_faults(FaultConfig(truncate_rate=1.0))
        async with session.get(f"{small.base_url}/contacts") as resp:
            assert resp.status == 200
            raw = await resp.read()
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(raw)

        small.set_faults(FaultConfig(reset_rate=1.0))
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{small.base_url}/contacts") as resp:
                await resp.read()

        small.set_faults(FaultConfig(latency_ms=1.0))
        async with session.get(f"{small.base_url}/contacts") as resp:
            assert resp.status == 200
    assert small.state.faults.fired == {}  # latency alone is not a drawn fault


@pytest.mark.asyncio
async def test_items_repeat_across_page_boundaries(small: Simulator, spec: SwaggerSpec) -> None:
    small.set_faults(FaultConfig(repeat_rate=1.0))
    async with aiohttp.ClientSession() as session:
        api = SpecClient(session, small.root_url, spec, small.issue_tokens().access_token)
        reply = await api.get("/v3/contacts", limit="25")
        pages = [[c["contact_id"] for c in reply.body["contacts"]]]
        while "next" in reply.body.get("_links", {}):
            reply = await api.call("GET", reply.body["_links"]["next"]["href"])
            pages.append([c["contact_id"] for c in reply.body["contacts"]])
    for before, after in itertools.pairwise(pages):
        assert after[0] == before[-1]  # the boundary item comes again
    flat = [cid for page in pages for cid in page]
    live = {c.contact_id for c in small.account.contacts if c.deleted_at is None}
    assert set(flat) == live and len(flat) == len(live) + len(pages) - 1


@pytest.mark.asyncio
async def test_clock_skew_stamps_updated_at_in_the_past(
    small: Simulator, spec: SwaggerSpec
) -> None:
    small.set_faults(FaultConfig(skew_seconds=60))
    small.clock.advance(seconds=120)
    last_poll = iso_ms(small.clock.now_ms())
    cid = next(c.contact_id for c in small.account.contacts if c.deleted_at is None)
    small.account.edit_contact(cid, first_name="Skewed")
    async with aiohttp.ClientSession() as session:
        api = SpecClient(session, small.root_url, spec, small.issue_tokens().access_token)
        body = (await api.get(f"/v3/contacts/{cid}")).body
        assert body["updated_at"] < last_poll
        naive = await api.all_contacts(updated_after=last_poll)
        assert cid not in {c["contact_id"] for c in naive}
        look_back = await api.all_contacts(updated_after=iso_ms(small.clock.now_ms() - 90_000))
        assert cid in {c["contact_id"] for c in look_back}


def test_fault_config_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FaultConfig(error_rate=1.5).validate()
