"""The request journal: what a client sent (method, path, query, body), for end-to-end tests."""

from __future__ import annotations

import pytest

from adapters.ctct_simulator import Simulator
from tests.simulator.client import SpecClient

pytestmark = pytest.mark.asyncio


async def test_the_journal_is_off_until_started_and_counts_still_work(
    sim: Simulator, api: SpecClient
) -> None:
    await api.get("/v3/contacts", limit="2")
    assert sim.journal == []
    assert sim.requests["GET /v3/contacts"] == 1


async def test_the_journal_keeps_each_request_with_its_query_and_body_and_resets(
    sim: Simulator, api: SpecClient
) -> None:
    sim.start_journal()
    cid = sim.account.contacts[0].contact_id
    list_id = next(iter(sim.account.lists))
    await api.get("/v3/contacts", limit="3", updated_after="2026-01-01T00:00:00.000Z")
    reply = await api.call(
        "POST",
        "/v3/activities/add_list_memberships",
        json={"source": {"contact_ids": [cid]}, "list_ids": [list_id]},
    )
    assert reply.status == 201
    await api.get("/v3/contacts/nobody")  # a refused request is journalled too

    first, second, third = sim.journal
    assert (first.method, first.path, first.endpoint) == ("GET", "/v3/contacts", "GET /v3/contacts")
    assert first.params == {"limit": "3", "updated_after": "2026-01-01T00:00:00.000Z"}
    assert first.body == b"" and first.json() is None
    assert second.endpoint == "POST /v3/activities/add_list_memberships"
    assert second.json() == {"source": {"contact_ids": [cid]}, "list_ids": [list_id]}
    assert (third.path, third.endpoint) == ("/v3/contacts/nobody", "GET /v3/contacts/{contact_id}")
    # The handler still read the body the journal had read: the membership was applied.
    await sim.drain_activities()
    assert list_id in sim.account.contact(cid).lists

    sim.reset_requests()
    assert sim.journal == [] and sim.requests == {}
    await api.get("/v3/contact_lists")
    assert [r.endpoint for r in sim.journal] == ["GET /v3/contact_lists"]
