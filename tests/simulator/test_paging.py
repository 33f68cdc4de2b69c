"""Cursor paging (pitfall 17): the cursor lives only in ``_links.next.href``, there is no
``next`` on the last page, and a contact that exists for the whole scan is never missed, however
the account changes between pages."""

from __future__ import annotations

import pytest

from adapters.ctct_simulator import Simulator
from tests.simulator.client import SpecClient


@pytest.mark.asyncio
async def test_scan_is_stable_while_contacts_change(sim: Simulator, api: SpecClient) -> None:
    stable = {c.contact_id for c in sim.account.contacts if c.deleted_at is None}
    reply = await api.get("/v3/contacts", limit="40")
    seen = [c["contact_id"] for c in reply.body["contacts"]]
    step = 0
    while "next" in reply.body.get("_links", {}):
        href = reply.body["_links"]["next"]["href"]
        assert href.startswith("/v3/contacts?cursor=")
        # Between pages: contacts are created, edited, and some deleted (seen and unseen).
        sim.account.add_contact(f"during.scan{step}@example.org", source="Contact")
        victims = [c for c in sim.account.contacts if c.deleted_at is None][step * 7 :: 97][:2]
        for victim in victims:
            sim.account.delete_contact(victim.contact_id)
            stable.discard(victim.contact_id)
        for c in sim.account.contacts[step::31]:
            if c.deleted_at is None:
                sim.account.edit_contact(c.contact_id, job_title=f"Edited {step}")
        step += 1
        reply = await api.call("GET", href)
        assert reply.status == 200
        seen.extend(c["contact_id"] for c in reply.body["contacts"])
    assert step >= 6
    assert stable <= set(seen)  # nothing that lived through the scan was missed
    assert len(seen) == len(set(seen))  # and nothing was served twice


@pytest.mark.asyncio
async def test_last_page_has_no_next_link_and_include_count(
    sim: Simulator, api: SpecClient
) -> None:
    live = sum(1 for c in sim.account.contacts if c.deleted_at is None)
    first = await api.get("/v3/contacts", limit="500", include_count="true")
    assert first.body["contacts_count"] == live == len(first.body["contacts"])
    assert "next" not in first.body.get("_links", {})
    listed = await api.all_contacts(lists=next(iter(sim.account.lists)), limit="10")
    members = {
        c.contact_id for c in sim.account.contacts if next(iter(sim.account.lists)) in c.lists
    }
    assert {c["contact_id"] for c in listed} == members


@pytest.mark.asyncio
async def test_a_forged_cursor_is_a_400(api: SpecClient) -> None:
    reply = await api.call("GET", "/v3/contacts?cursor=not-ours")
    assert reply.status == 400 and reply.body[0]["error_key"] == "contacts.api.validation.error"
