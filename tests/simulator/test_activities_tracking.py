"""Bulk activities run asynchronously and finish within a bounded number of polls (pitfall
15); campaign and contact tracking is newest first with paging and no date filter (16)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from tests.simulator.client import SpecClient
from tests.simulator.swagger import SwaggerSpec

REPORTS = ("sends", "opens", "clicks", "forwards", "optouts", "bounces")


@pytest.mark.asyncio
async def test_activity_moves_initialized_processing_completed_one_step_per_poll(
    spec: SwaggerSpec,
) -> None:
    config = SimulatorConfig(
        contacts=50, lists=2, campaigns=0, auto_process=False, activity_chunk=2
    )
    async with run_simulator(config) as sim, aiohttp.ClientSession() as session:
        api = SpecClient(session, sim.root_url, spec, sim.issue_tokens().access_token)
        members = [
            c.contact_id
            for c in sim.account.contacts
            if c.deleted_at is None and c.permission != "unsubscribed"
        ][:5]
        target = list(sim.account.lists)[1]
        body = {"list_ids": [target], "source": {"contact_ids": members}}
        posted = await api.call("POST", "/v3/activities/add_list_memberships", json=body)
        assert posted.status == 201 and posted.body["state"] == "initialized"
        href = posted.body["_links"]["self"]["href"]
        seen = []
        for _ in range(10):
            status = (await api.call("GET", href)).body
            seen.append((status["state"], status["percent_done"]))
            if status["state"] == "completed":
                break
        assert seen == [("processing", 40), ("processing", 80), ("completed", 100)]
        assert status["status"]["items_completed_count"] == 5
        assert all(target in sim.account.contact(cid).lists for cid in members)


@pytest.mark.asyncio
async def test_remove_memberships_and_bulk_delete_report_errors_as_strings(
    sim: Simulator, api: SpecClient
) -> None:
    list_id = next(iter(sim.account.lists))
    members = [c.contact_id for c in sim.account.contacts if list_id in c.lists][:3]
    removed = await api.call(
        "POST",
        "/v3/activities/remove_list_memberships",
        json={"list_ids": [list_id], "source": {"contact_ids": members}},
    )
    assert removed.status == 201
    unknown = "00000000-0000-4000-a000-000000000000"
    deleted = await api.call(
        "POST", "/v3/activities/contact_delete", json={"contact_ids": [members[0], unknown]}
    )
    await sim.drain_activities()
    done = (await api.get(f"/v3/activities/{deleted.body['activity_id']}")).body
    assert done["state"] == "completed"
    assert done["activity_errors"] == [f"contact {unknown}: not found"]
    assert all(list_id not in sim.account.contact(cid).lists for cid in members)
    assert sim.account.contact(members[0]).deleted
    listing = await api.get("/v3/activities", limit="10")
    assert {a["activity_id"] for a in listing.body["activities"]} >= {deleted.body["activity_id"]}


@pytest.mark.asyncio
async def test_list_crud_and_async_delete(sim: Simulator, api: SpecClient) -> None:
    created = await api.call("POST", "/v3/contact_lists", json={"name": "VIPs", "favorite": True})
    assert created.status == 201
    list_id = created.body["list_id"]
    dup = await api.call("POST", "/v3/contact_lists", json={"name": "VIPs"})
    assert dup.status == 409
    renamed = await api.call("PUT", f"/v3/contact_lists/{list_id}", json={"name": "Very VIPs"})
    assert renamed.body["name"] == "Very VIPs"
    sim.account.join_list(sim.account.contacts[0].contact_id, list_id)
    counted = await api.get(f"/v3/contact_lists/{list_id}", include_membership_count="all")
    assert counted.body["membership_count"] == 1
    gone = await api.call("DELETE", f"/v3/contact_lists/{list_id}")
    assert gone.status == 202 and gone.headers["Location"].startswith("/v3/activities/")
    await sim.drain_activities()
    live = await api.get("/v3/contact_lists", include_count="true")
    assert list_id not in {x["list_id"] for x in live.body["lists"]}
    assert list_id not in sim.account.contacts[0].lists


async def _follow(api: SpecClient, path: str, **params: str) -> list[dict[str, Any]]:
    reply = await api.get(path, **params)
    assert reply.status == 200, reply.body
    out = list(reply.body["tracking_activities"])
    while "next" in reply.body.get("_links", {}):
        reply = await api.call("GET", reply.body["_links"]["next"]["href"])
        out.extend(reply.body["tracking_activities"])
    return out


@pytest.mark.asyncio
async def test_campaign_reports_are_newest_first_and_page_without_gaps(
    sim: Simulator, api: SpecClient
) -> None:
    campaigns = (await api.get("/v3/emails")).body["campaigns"]
    assert len(campaigns) == 2
    detail = (await api.get(f"/v3/emails/{campaigns[0]['campaign_id']}")).body
    primary = next(a for a in detail["campaign_activities"] if a["role"] == "primary_email")
    activity_id = primary["campaign_activity_id"]
    for kind in REPORTS:
        records = await _follow(
            api, f"/v3/reports/email_reports/{activity_id}/tracking/{kind}", limit="7"
        )
        times = [r["created_time"] for r in records]
        assert times == sorted(times, reverse=True), kind
        assert len(records) == len(sim.tracking.records[activity_id][f"em_{kind}"]), kind
    sends = await _follow(
        api, f"/v3/reports/email_reports/{activity_id}/tracking/sends", limit="500"
    )
    assert len({r["contact_id"] for r in sends}) == len(sends) > 0
    optouts = await _follow(api, f"/v3/reports/email_reports/{activity_id}/tracking/optouts")
    for r in optouts:  # a footer opt-out also unsubscribed the contact
        assert sim.account.contact(r["contact_id"]).permission == "unsubscribed"
    over = await api.call(
        "GET",
        f"/v3/reports/email_reports/{activity_id}/tracking/opens",
        params={"limit": "501"},
        check_request=False,
    )
    assert over.status == 400


@pytest.mark.asyncio
async def test_emails_filter_on_updated_at(sim: Simulator, api: SpecClient) -> None:
    sim.clock.advance(seconds=5)
    cutoff = sim.clock.now()
    sim.clock.advance(seconds=5)
    camp = sim.tracking.send_campaign("Fresh news", 20)
    later = await api.get("/v3/emails", after_date=cutoff.isoformat().replace("+00:00", "Z"))
    assert [c["campaign_id"] for c in later.body["campaigns"]] == [camp.campaign_id]


@pytest.mark.asyncio
async def test_contact_activity_details_newest_first_with_limit_100(
    sim: Simulator, api: SpecClient
) -> None:
    contact_id = max(sim.tracking.by_contact, key=lambda k: len(sim.tracking.by_contact[k]))
    kinds = "em_sends,em_opens,em_clicks,em_bounces,em_optouts,em_forwards"
    records = await _follow(
        api,
        f"/v3/reports/contact_reports/{contact_id}/activity_details",
        tracking_activities_list=kinds,
        limit="1",
    )
    assert len(records) == len(sim.tracking.by_contact[contact_id]) >= 2
    times = [r["created_time"] for r in records]
    assert times == sorted(times, reverse=True)
    assert all(r["campaign_activity_name"] for r in records)
    path = f"/v3/reports/contact_reports/{contact_id}/activity_details"
    assert (
        await api.call("GET", path, params={"limit": "5"})
    ).status == 400  # a type list is required
    too_many = await api.call(
        "GET",
        path,
        params={"tracking_activities_list": "em_sends", "limit": "101"},
        check_request=False,
    )
    assert too_many.status == 400


@pytest.mark.asyncio
async def test_an_import_that_changes_nothing_leaves_updated_at_alone(
    sim: Simulator, api: SpecClient
) -> None:
    c = next(
        c
        for c in sim.account.contacts
        if c.deleted_at is None and c.lists and c.permission != "unsubscribed"
    )
    row = {"email": c.email, "first_name": c.first_name or "X", "mobile_phone": "+1-555-000-1111"}
    body = {"import_data": [row], "list_ids": [c.lists[0]]}
    await api.call("POST", "/v3/activities/contacts_json_import", json=body)
    await sim.drain_activities()
    stamped, phone_id = c.updated_at, c.phones[-1].phone_number_id
    sim.clock.advance(seconds=5)
    await api.call("POST", "/v3/activities/contacts_json_import", json=body)
    await sim.drain_activities()
    assert c.updated_at == stamped and c.phones[-1].phone_number_id == phone_id
    body["import_data"][0]["job_title"] = "Treasurer"
    await api.call("POST", "/v3/activities/contacts_json_import", json=body)
    await sim.drain_activities()
    assert c.updated_at > stamped and c.job_title == "Treasurer"


@pytest.mark.asyncio
async def test_activity_stats_count_what_the_reports_list_ten_ids_at_most(
    sim: Simulator, api: SpecClient
) -> None:
    """The stats report (ten campaign activities a request) counts each report's records: the
    opens and clicks reports list every event (``*_all``), the others one per recipient. A
    permalink has no stats: an error beside the results, not a failed request."""
    campaigns = (await api.get("/v3/emails")).body["campaigns"]
    ids, permalink = [], ""
    for c in campaigns:
        for a in (await api.get(f"/v3/emails/{c['campaign_id']}")).body["campaign_activities"]:
            if a["role"] == "primary_email":
                ids.append(a["campaign_activity_id"])
            else:
                permalink = a["campaign_activity_id"]
    path = f"/v3/reports/stats/email_campaign_activities/{','.join([*ids, permalink])}"
    reply = await api.get(path)
    assert reply.status == 200
    assert [r["campaign_activity_id"] for r in reply.body["results"]] == ids
    assert [e["error_key"] for e in reply.body["errors"]] == [
        "reportingsvc.not_found.campaign_activity_ids"
    ]
    for result in reply.body["results"]:
        records = sim.tracking.records[result["campaign_activity_id"]]
        stats = result["stats"]
        assert stats["em_opens_all"] == len(records["em_opens"]) >= stats["em_opens"] > 0
        assert stats["em_clicks_all"] == len(records["em_clicks"])
        for kind in ("sends", "bounces", "forwards", "optouts"):
            assert stats[f"em_{kind}"] == len(records[f"em_{kind}"]), kind
    # A second open by a reader: one more event, the same number of readers.
    before = reply.body["results"][0]["stats"]
    reader = sim.account.by_id[sim.tracking.records[ids[0]]["em_opens"][0].contact_id]
    sim.tracking.record(ids[0], reader, "em_opens")
    moved = (await api.get(f"/v3/reports/stats/email_campaign_activities/{ids[0]}")).body
    after = moved["results"][0]["stats"]
    assert (after["em_opens_all"], after["em_opens"]) == (
        before["em_opens_all"] + 1,
        before["em_opens"],
    )
    eleven = ",".join([ids[0]] * 11)
    too_many = await api.call(
        "GET", f"/v3/reports/stats/email_campaign_activities/{eleven}", check_request=False
    )
    assert too_many.status == 400
    malformed = await api.call(
        "GET", f"/v3/reports/stats/email_campaign_activities/{ids[0]},nope", check_request=False
    )
    assert malformed.status == 404


@pytest.mark.asyncio
async def test_a_campaigns_footer_opt_outs_happen_when_their_time_comes(
    sim: Simulator, api: SpecClient
) -> None:
    """A campaign sent now has its opt-outs an hour or more later: until then its recipients
    are subscribed (listing one unsubscribed, with an opt-out date in the future, before she
    opened the campaign, made an opt-out seen before it happened). Each takes effect at its
    time, dated then, and shows in the opt-out report and in the contacts listing together."""
    sent = sim.tracking.send_campaign("Spring appeal", 400)
    primary = sent.activities[0][0]
    later = sim.tracking.records[primary]["em_optouts"]
    assert later and all(r.created > sim.clock.now_ms() for r in later)
    for r in later:
        assert sim.account.contact(r.contact_id).permission != "unsubscribed"
    first = min(later, key=lambda r: r.created)
    sim.clock.advance(seconds=(first.created - sim.clock.now_ms()) / 1000)
    report = await _follow(api, f"/v3/reports/email_reports/{primary}/tracking/optouts")
    assert [r["contact_id"] for r in report] == [first.contact_id]
    assert sim.account.contact(first.contact_id).permission == "unsubscribed"
    assert sim.account.contact(first.contact_id).opt_out_date == first.created
    rest = [r for r in later if r.created > first.created]
    assert all(sim.account.contact(r.contact_id).permission != "unsubscribed" for r in rest)
    sim.clock.advance(seconds=24 * 3600)
    assert sim.tracking.settle() == len(rest)
    assert all(sim.account.contact(r.contact_id).permission == "unsubscribed" for r in later)
