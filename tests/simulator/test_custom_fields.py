"""Custom field definitions: what a client needs to map observed ids to ``cf:<name>`` keys."""

from __future__ import annotations

import pytest

from adapters.ctct_simulator import Simulator
from tests.simulator.client import SpecClient


@pytest.mark.asyncio
async def test_custom_field_definitions_crud(sim: Simulator, api: SpecClient) -> None:
    listed = (await api.get("/v3/contact_custom_fields", limit="1")).body
    assert "next" in listed["_links"]
    names = {f["name"] for f in listed["custom_fields"]}
    rest = await api.call("GET", listed["_links"]["next"]["href"])
    names |= {f["name"] for f in rest.body["custom_fields"]}
    assert names == {"tier", "member_since"}

    created = await api.call(
        "POST", "/v3/contact_custom_fields", json={"label": "Shoe Size", "type": "string"}
    )
    assert created.status == 201 and created.body["name"] == "shoe_size"
    field_id = created.body["custom_field_id"]
    dup = await api.call(
        "POST", "/v3/contact_custom_fields", json={"label": "shoe size", "type": "string"}
    )
    assert dup.status == 409

    c = next(c for c in sim.account.contacts if c.deleted_at is None)
    row = {"email": c.email, "cf:shoe_size": "42"}
    await api.call(
        "POST",
        "/v3/activities/contacts_json_import",
        json={"import_data": [row], "list_ids": [next(iter(sim.account.lists))]},
    )
    await sim.drain_activities()
    got = (await api.get(f"/v3/contacts/{c.contact_id}", include="custom_fields")).body
    assert {"custom_field_id": field_id, "value": "42"} in got["custom_fields"]

    renamed = await api.call(
        "PUT", f"/v3/contact_custom_fields/{field_id}", json={"label": "Shoe", "type": "string"}
    )
    assert renamed.body["label"] == "Shoe" and renamed.body["name"] == "shoe_size"
    assert (await api.call("DELETE", f"/v3/contact_custom_fields/{field_id}")).status == 204
    assert (await api.get(f"/v3/contact_custom_fields/{field_id}")).status == 404
    got = (await api.get(f"/v3/contacts/{c.contact_id}", include="custom_fields")).body
    assert all(f["custom_field_id"] != field_id for f in got["custom_fields"])
