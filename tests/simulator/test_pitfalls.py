"""One test per pitfall of the reference's §4 that concerns the server.

Every request and answer goes through SpecClient, so each is also checked against the
swagger file.
"""

from __future__ import annotations

import pytest

from adapters.ctct_simulator import Simulator
from adapters.ctct_simulator.clock import iso_ms
from tests.simulator.client import SpecClient


def _live_subscribed(sim: Simulator) -> list[str]:
    return [
        c.contact_id
        for c in sim.account.contacts
        if c.deleted_at is None and c.permission in ("explicit", "implicit")
    ]


@pytest.mark.asyncio
async def test_1_unsubscribe_moves_email_timestamps_but_not_updated_at(
    sim: Simulator, api: SpecClient
) -> None:
    cid = _live_subscribed(sim)[0]
    before = (await api.get(f"/v3/contacts/{cid}")).body
    checkpoint = iso_ms(sim.clock.now_ms())
    sim.clock.advance(seconds=5)
    sim.account.unsubscribe(cid, reason="too many emails", source="Contact")

    after = (await api.get(f"/v3/contacts/{cid}")).body
    assert after["updated_at"] == before["updated_at"]
    assert after["email_address"]["updated_at"] > before["email_address"]["updated_at"]
    assert after["email_address"]["permission_to_send"] == "unsubscribed"
    assert after["email_address"]["opt_out_source"] == "Contact"
    assert after["email_address"]["opt_out_reason"] == "too many emails"
    assert after["email_address"]["opt_out_date"] > checkpoint

    by_updated = await api.all_contacts(updated_after=checkpoint, limit="500")
    assert cid not in {c["contact_id"] for c in by_updated}  # the naive sync misses it
    by_optout = await api.all_contacts(optout_after=checkpoint, limit="500")
    assert [c["contact_id"] for c in by_optout] == [cid]


@pytest.mark.asyncio
async def test_2_timestamps_have_ms_precision_and_updated_after_is_strict(
    sim: Simulator, api: SpecClient
) -> None:
    cid = _live_subscribed(sim)[1]
    sim.clock.advance(seconds=1)
    sim.account.edit_contact(cid, first_name="Ann", source="Account")
    stamp = (await api.get(f"/v3/contacts/{cid}")).body["updated_at"]
    assert len(stamp) == len("2016-01-23T13:48:44.108Z") and stamp.endswith("Z")
    at_stamp = await api.all_contacts(updated_after=stamp)
    assert cid not in {c["contact_id"] for c in at_stamp}  # a client must look back
    overlap = iso_ms(sim.clock.now_ms() - 2000)
    assert cid in {c["contact_id"] for c in await api.all_contacts(updated_after=overlap)}


@pytest.mark.asyncio
async def test_3_deleted_contacts_are_hidden_by_default(sim: Simulator, api: SpecClient) -> None:
    cid = _live_subscribed(sim)[2]
    assert (await api.call("DELETE", f"/v3/contacts/{cid}")).status == 204

    default = {c["contact_id"] for c in await api.all_contacts(limit="500")}
    assert cid not in default
    deleted = await api.all_contacts(status="deleted", limit="500")
    found = next(c for c in deleted if c["contact_id"] == cid)
    assert len(found["deleted_at"]) == 10  # a date, no time
    everything = {c["contact_id"] for c in await api.all_contacts(status="all", limit="500")}
    assert cid in everything
    assert len(everything) == len(sim.account.contacts)


@pytest.mark.asyncio
async def test_4_post_answers_409_for_any_known_address_deleted_included(
    sim: Simulator, api: SpecClient
) -> None:
    victim = sim.account.contact(_live_subscribed(sim)[3])
    sim.account.delete_contact(victim.contact_id)
    body = {"email_address": {"address": victim.email.upper()}, "create_source": "Account"}
    reply = await api.call("POST", "/v3/contacts", json=body)
    assert reply.status == 409
    assert reply.body[0]["error_key"] == "contacts.api.conflict"

    other = sim.account.contact(_live_subscribed(sim)[4])
    put = {"email_address": {"address": victim.email}, "update_source": "Account"}
    clash = await api.call("PUT", f"/v3/contacts/{other.contact_id}", json=put)
    assert clash.status == 409

    fresh = {"email_address": {"address": "brand.new@example.org"}, "create_source": "Account"}
    created = await api.call("POST", "/v3/contacts", json=fresh)
    assert created.status == 201
    assert created.body["email_address"]["address"] == "brand.new@example.org"


@pytest.mark.asyncio
async def test_5_deleted_then_recreated_is_the_same_contact_still_unsubscribed(
    sim: Simulator, api: SpecClient
) -> None:
    cid = _live_subscribed(sim)[5]
    sim.account.unsubscribe(cid, reason="not relevant", source="Contact")
    sim.account.delete_contact(cid)
    email = sim.account.contact(cid).email
    lists = list(sim.account.lists)

    reply = await api.call(
        "POST",
        "/v3/activities/contacts_json_import",
        json={"import_data": [{"email": email, "first_name": "Back"}], "list_ids": [lists[0]]},
    )
    assert reply.status == 201
    await sim.drain_activities()

    found = await api.all_contacts(email=email, include="list_memberships")
    assert [c["contact_id"] for c in found] == [cid]  # revived, same id
    assert found[0]["email_address"]["permission_to_send"] == "unsubscribed"
    assert found[0]["list_memberships"] == []
    assert "deleted_at" not in found[0]


@pytest.mark.asyncio
async def test_6_imports_never_resubscribe_and_count_cannot_add_to_list(
    sim: Simulator, api: SpecClient
) -> None:
    out_id = _live_subscribed(sim)[6]
    sim.account.unsubscribe(out_id, source="Contact")
    out = sim.account.contact(out_id)
    kept = sim.account.contact(_live_subscribed(sim)[7])
    kept.permission = "explicit"
    list_id = next(iter(sim.account.lists))
    rows = [
        {"email": out.email, "first_name": "Still"},
        {"email": kept.email, "job_title": "Chair"},
        {"email": "imported.new@example.org", "first_name": "New"},
        {"email": "not-an-address", "first_name": "Bad"},
    ]
    reply = await api.call(
        "POST",
        "/v3/activities/contacts_json_import",
        json={"import_data": rows, "list_ids": [list_id]},
    )
    assert reply.status == 201
    await sim.drain_activities()
    status = (await api.get(f"/v3/activities/{reply.body['activity_id']}")).body
    assert status["state"] == "completed"
    assert status["status"]["cannot_add_to_list_count"] == 1
    assert status["status"]["error_count"] == 1
    assert "row 4: email" in status["activity_errors"][0]

    assert out.permission == "unsubscribed" and list_id not in out.lists
    assert out.first_name == "Still"  # supplied properties are still updated
    assert kept.permission == "explicit" and kept.job_title == "Chair"
    new = sim.account.find_email("imported.new@example.org")
    assert new is not None
    assert (new.permission, new.opt_in_source, new.lists) == ("implicit", "Account", (list_id,))


@pytest.mark.asyncio
async def test_7_sign_up_form_sets_existing_contacts_explicit(
    sim: Simulator, api: SpecClient
) -> None:
    cid = _live_subscribed(sim)[8]
    sim.account.unsubscribe(cid, source="Account")
    c = sim.account.contact(cid)
    list_id = list(sim.account.lists)[1]
    reply = await api.call(
        "POST",
        "/v3/contacts/sign_up_form",
        json={"email_address": c.email, "list_memberships": [list_id], "first_name": "Signed"},
    )
    assert reply.status == 200
    assert reply.body == {"contact_id": cid, "action": "updated"}
    after = (await api.get(f"/v3/contacts/{cid}", include="list_memberships")).body
    assert after["email_address"]["permission_to_send"] == "explicit"
    assert list_id in after["list_memberships"] and after["first_name"] == "Signed"

    created = await api.call(
        "POST",
        "/v3/contacts/sign_up_form",
        json={"email_address": "joined@example.org", "list_memberships": [list_id]},
    )
    assert created.status == 201 and created.body["action"] == "created"


@pytest.mark.asyncio
async def test_8_put_nulls_omitted_core_fields_and_keeps_omitted_subresources(
    sim: Simulator, api: SpecClient
) -> None:
    c = next(
        c
        for c in sim.account.contacts
        if c.deleted_at is None and c.phones and c.company_name and c.lists
    )
    phones, lists = c.phones, c.lists
    put = {
        "email_address": {"address": c.email},
        "first_name": "Only",
        "update_source": "Account",
    }
    reply = await api.call("PUT", f"/v3/contacts/{c.contact_id}", json=put)
    assert reply.status == 200
    body = reply.body
    assert body["first_name"] == "Only"
    assert "last_name" not in body and "company_name" not in body  # core fields now null
    assert [p["phone_number"] for p in body["phone_numbers"]] == [p.phone_number for p in phones]
    assert body["list_memberships"] == list(lists)

    missing_source = await api.call(
        "PUT",
        f"/v3/contacts/{c.contact_id}",
        json={"email_address": {"address": c.email}},
        check_request=False,  # the spec itself forbids it: that is the point
    )
    assert missing_source.status == 400
    assert "update_source" in missing_source.body[0]["error_message"]


@pytest.mark.asyncio
async def test_8b_put_revives_a_deleted_contact(sim: Simulator, api: SpecClient) -> None:
    cid = _live_subscribed(sim)[9]
    c = sim.account.contact(cid)
    sim.account.delete_contact(cid)
    put = {"email_address": {"address": c.email}, "update_source": "Contact"}
    refused = await api.call("PUT", f"/v3/contacts/{cid}", json=put)
    assert refused.status == 400
    put["update_source"] = "Account"
    revived = await api.call("PUT", f"/v3/contacts/{cid}", json=put)
    assert revived.status == 200 and "deleted_at" not in revived.body
    assert cid in {x["contact_id"] for x in await api.all_contacts(limit="500")}


@pytest.mark.asyncio
async def test_9_resubscribe_sends_one_confirmation_and_the_contact_stays_out(
    sim: Simulator, api: SpecClient
) -> None:
    cid = _live_subscribed(sim)[10]
    c = sim.account.contact(cid)
    sim.account.unsubscribe(cid, reason="oops", source="Contact")
    list_id = next(iter(sim.account.lists))

    direct = {
        "email_address": {"address": c.email, "permission_to_send": "explicit"},
        "update_source": "Account",
    }
    assert (await api.call("PUT", f"/v3/contacts/{cid}", json=direct)).status == 400

    reply = await api.call("PUT", f"/v3/contacts/resubscribe/{cid}", json={"list_ids": [list_id]})
    assert reply.status == 200
    after = (await api.get(f"/v3/contacts/{cid}")).body
    assert after["email_address"]["permission_to_send"] == "unsubscribed"
    again = await api.call("PUT", f"/v3/contacts/resubscribe/{cid}", json={"list_ids": [list_id]})
    assert again.status == 409

    sim.account.confirm_resubscribe(cid)  # the contact clicks the link
    confirmed = (await api.get(f"/v3/contacts/{cid}", include="list_memberships")).body
    assert confirmed["email_address"]["permission_to_send"] == "explicit"
    assert list_id in confirmed["list_memberships"]


@pytest.mark.asyncio
async def test_9b_account_opt_outs_may_be_re_added_by_the_account(
    sim: Simulator, api: SpecClient
) -> None:
    cid = _live_subscribed(sim)[11]
    c = sim.account.contact(cid)
    sim.account.unsubscribe(cid, source="Account")
    put = {
        "email_address": {"address": c.email, "permission_to_send": "implicit"},
        "update_source": "Account",
    }
    reply = await api.call("PUT", f"/v3/contacts/{cid}", json=put)
    assert reply.status == 200
    assert reply.body["email_address"]["permission_to_send"] == "implicit"


@pytest.mark.asyncio
async def test_10_limits_are_enforced(sim: Simulator, api: SpecClient) -> None:
    over = await api.call("GET", "/v3/contacts", params={"limit": "501"}, check_request=False)
    assert over.status == 400 and "limit" in over.body[0]["error_message"]
    zero = await api.call("GET", "/v3/contacts", params={"limit": "0"}, check_request=False)
    assert zero.status == 400

    c = sim.account.contact(_live_subscribed(sim)[12])
    for i in range(60 - len(sim.account.lists)):
        sim.account.add_list(f"Extra {i}")
    too_many_lists = {
        "email_address": {"address": c.email},
        "update_source": "Account",
        "list_memberships": list(sim.account.lists)[:51],
    }
    reply = await api.call(
        "PUT", f"/v3/contacts/{c.contact_id}", json=too_many_lists, check_request=False
    )
    assert reply.status == 400 and "list_memberships" in reply.body[0]["error_message"]

    cf = next(iter(sim.account.custom_fields.values()))
    fields = [{"custom_field_id": cf, "value": str(i)} for i in range(26)]
    body = {
        "email_address": {"address": c.email},
        "update_source": "Account",
        "custom_fields": fields,
    }
    reply = await api.call("PUT", f"/v3/contacts/{c.contact_id}", json=body, check_request=False)
    assert reply.status == 400 and "custom_fields" in reply.body[0]["error_message"]

    ids = [x.contact_id for x in sim.account.contacts[:300]] * 2
    body = {"list_ids": [next(iter(sim.account.lists))], "source": {"contact_ids": ids[:501]}}
    reply = await api.call(
        "POST", "/v3/activities/add_list_memberships", json=body, check_request=False
    )
    assert reply.status == 400

    rows = [{"email": f"bulk{i}@example.org"} for i in range(40_001)]
    body = {"import_data": rows, "list_ids": [next(iter(sim.account.lists))]}
    reply = await api.call(
        "POST", "/v3/activities/contacts_json_import", json=body, check_request=False
    )
    assert reply.status == 400 and "40000" in reply.body[0]["error_message"]


@pytest.mark.asyncio
async def test_10b_more_than_1000_queued_activities_answer_429() -> None:
    from adapters.ctct_simulator import SimulatorConfig, run_simulator

    async with run_simulator(
        SimulatorConfig(contacts=5, lists=1, campaigns=0, auto_process=False)
    ) as s:
        for _ in range(1000):
            s.state.activities.submit("contact_delete", [], [])
        import aiohttp

        async with aiohttp.ClientSession() as session:
            from tests.simulator.swagger import SwaggerSpec

            client = SpecClient(
                session, s.root_url, SwaggerSpec.load(), s.issue_tokens().access_token
            )
            cid = s.account.contacts[0].contact_id
            reply = await client.call(
                "POST", "/v3/activities/contact_delete", json={"contact_ids": [cid]}
            )
            assert reply.status == 429
            assert isinstance(reply.body, dict)
            assert await s.drain_activities() == 1000
            reply = await client.call(
                "POST", "/v3/activities/contact_delete", json={"contact_ids": [cid]}
            )
            assert reply.status == 201


@pytest.mark.asyncio
async def test_11_email_length_differs_between_contact_and_import(
    sim: Simulator, api: SpecClient
) -> None:
    long_local = "a" * 60 + "@example.org"  # 72 chars: fine on a contact, too long to import
    created = await api.call(
        "POST",
        "/v3/contacts",
        json={"email_address": {"address": long_local}, "create_source": "Account"},
    )
    assert created.status == 201
    reply = await api.call(
        "POST",
        "/v3/activities/contacts_json_import",
        json={
            "import_data": [{"email": "b" * 60 + "@example.org"}],
            "list_ids": [next(iter(sim.account.lists))],
        },
        check_request=False,  # the spec's JsonImportContact says maxLength 50: we send it anyway
    )
    await sim.drain_activities()
    status = (await api.get(f"/v3/activities/{reply.body['activity_id']}")).body
    assert status["status"]["error_count"] == 1 and "email" in status["activity_errors"][0]
    too_long = "c" * 80 + "@example.org"
    reply = await api.call(
        "POST",
        "/v3/contacts",
        json={"email_address": {"address": too_long}, "create_source": "Account"},
        check_request=False,
    )
    assert reply.status == 400 and "address" in reply.body[0]["error_message"]


@pytest.mark.asyncio
async def test_every_rendered_contact_is_a_valid_contact_resource(
    sim: Simulator, api: SpecClient
) -> None:
    c = sim.account.contact(_live_subscribed(sim)[13])
    put = {
        "email_address": {"address": c.email},
        "update_source": "Account",
        "first_name": "Full",
        "anniversary": "11/15/2006",
        "birthday_month": 2,
        "birthday_day": 29,
        "phone_numbers": [{"phone_number": "+1-555-555-5555", "kind": "work"}],
        "street_addresses": [
            {"kind": "work", "street": "1 Loop Rd", "city": "Chicago", "country": "US"}
        ],
        "notes": [{"content": "met at the fair"}],
        "custom_fields": [
            {"custom_field_id": next(iter(sim.account.custom_fields.values())), "value": "gold"}
        ],
    }
    reply = await api.call("PUT", f"/v3/contacts/{c.contact_id}", json=put)
    assert reply.status == 200 and reply.body["anniversary"] == "2006-11-15"
    sim.account.unsubscribe(_live_subscribed(sim)[14], reason="r", source="Contact")
    sim.account.delete_contact(_live_subscribed(sim)[15])
    everything = await api.all_contacts(
        status="all",
        limit="500",
        include="custom_fields,list_memberships,phone_numbers,street_addresses,taggings,notes",
    )
    assert len(everything) == len(sim.account.contacts)  # each page was validated by SpecClient
    for contact in everything[:50]:
        api.spec.validate_definition("ContactResource", contact)
    bad = {**put, "anniversary": "2006-13-45"}
    reply = await api.call("PUT", f"/v3/contacts/{c.contact_id}", json=bad)
    assert reply.status == 400 and "anniversary" in reply.body[0]["error_message"]
