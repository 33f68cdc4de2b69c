"""HTTP handlers for campaigns (/v3/emails) and tracking reports."""

from __future__ import annotations

import re
from typing import Any, Final

from aiohttp import web

from adapters.ctct_simulator.clock import iso_ms, parse_iso_ms
from adapters.ctct_simulator.errors import Invalid, NotFound
from adapters.ctct_simulator.http_util import int_param
from adapters.ctct_simulator.state import STATE, json_response
from adapters.ctct_simulator.tracking import KINDS, TrackingRecord

__all__ = ["routes"]

routes = web.RouteTableDef()
CONTACT_KINDS = frozenset(
    (
        "em_sends",
        "em_opens",
        "em_clicks",
        "em_bounces",
        "em_optouts",
        "em_forwards",
        "p_contact_open",
        "p_contact_click",
        "p_contact_add",
        "p_contact_update",
    )
)


def _position(request: web.Request, total: int) -> int:
    """Records are served newest first; the cursor is the exclusive end of what is left."""
    text = request.query.get("cursor")
    if text is None:
        return total
    try:
        pos = int(text)
    except ValueError:
        raise Invalid(f"cursor: {text!r} is not a valid cursor") from None
    if not 0 <= pos <= total:
        raise Invalid(f"cursor: {text!r} is not a valid cursor")
    return pos


def _time(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return parse_iso_ms(text)
    except ValueError as exc:
        raise Invalid(f"{name}: {exc}") from None


@routes.get("/v3/emails")
async def list_campaigns(request: web.Request) -> web.Response:
    """GET /emails: campaigns by ``updated_at`` (``after_date`` / ``before_date``)."""
    st = request.app[STATE]
    limit = int_param(request.query, "limit", 50, 1, 500)
    after, before = _time(request, "after_date"), _time(request, "before_date")
    camps = [
        c
        for c in st.tracking.campaigns.values()
        if (after is None or c.updated_at >= after) and (before is None or c.updated_at <= before)
    ]
    camps.reverse()  # newest first
    offset = _position(request, len(camps)) if "cursor" in request.query else 0
    page = camps[offset : offset + limit]
    out: dict[str, Any] = {"campaigns": [c.summary() for c in page]}
    if offset + limit < len(camps):
        rest = "".join(
            f"&{k}={request.query[k]}" for k in ("after_date", "before_date") if k in request.query
        )
        out["_links"] = {
            "next": {"href": f"/v3/emails?cursor={offset + limit}&limit={limit}{rest}"}
        }
    return json_response(out)


@routes.get("/v3/emails/{campaign_id}")
async def get_campaign(request: web.Request) -> web.Response:
    """GET /emails/{id}: the campaign with its campaign activities."""
    st = request.app[STATE]
    camp = st.tracking.campaigns.get(request.match_info["campaign_id"])
    if camp is None:
        raise NotFound(
            f"Campaign {request.match_info['campaign_id']} not found.", "campaign.not_found"
        )
    return json_response(camp.detail())


def _page(records: list[TrackingRecord], pos: int, limit: int) -> tuple[list[TrackingRecord], int]:
    start = max(pos - limit, 0)
    return list(reversed(records[start:pos])), start


@routes.get("/v3/reports/email_reports/{campaign_activity_id}/tracking/{kind}")
async def campaign_report(request: web.Request) -> web.Response:
    """The six per-campaign-activity reports, newest first, ``limit`` <= 500."""
    st = request.app[STATE]
    kind = KINDS.get(request.match_info["kind"])
    if kind is None:
        raise NotFound(f"No tracking report {request.match_info['kind']!r}.")
    activity_id = request.match_info["campaign_activity_id"]
    if activity_id not in st.tracking.records:
        raise NotFound(f"Campaign activity {activity_id} not found.", "reports.not_found")
    limit = int_param(request.query, "limit", 500, 1, 500)
    # What has happened: the first so many, paged in place (a copy per page would make
    # reading a report of a million sends quadratic).
    records = st.tracking.records[activity_id][kind]
    total = st.tracking.happened(activity_id, kind)
    if kind == "em_clicks" and "url_id" in request.query:
        records = [r for r in records[:total] if r.extra.get("url_id") == request.query["url_id"]]
        total = len(records)
    if kind == "em_bounces" and "bounce_code" in request.query:
        codes = set(request.query["bounce_code"].split(","))
        records = [r for r in records[:total] if r.extra.get("bounce_code") in codes]
        total = len(records)
    page, rest = _page(records, _position(request, total), limit)
    out: dict[str, Any] = {
        "tracking_activities": [st.tracking.render(r, report=True) for r in page],
        # always present (empty on the last page): OptoutsTrackingActivitiesPage requires it
        "_links": {},
    }
    if rest > 0:
        extra = "".join(
            f"&{k}={request.query[k]}" for k in ("url_id", "bounce_code") if k in request.query
        )
        out["_links"] = {"next": {"href": f"{request.path}?cursor={rest}&limit={limit}{extra}"}}
    return json_response(out)


_UUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@routes.get("/v3/reports/stats/email_campaign_activities/{campaign_activity_ids}")
async def campaign_activity_stats(request: web.Request) -> web.Response:
    """Counts per campaign activity, up to ten a request. A malformed id fails the whole
    request (404); one that does not exist, or has no stats, is listed under ``errors``."""
    st = request.app[STATE]
    ids = request.match_info["campaign_activity_ids"].split(",")
    if len(ids) > 10:
        raise Invalid(f"campaign_activity_ids: {len(ids)} given, at most 10")
    if bad := [i for i in ids if not _UUID.match(i)]:
        raise NotFound(
            f"Campaign activity {bad[0]} is not a valid id.",
            "reportingsvc.not_found.invalid_path_param.campaign_activity_ids",
        )
    now = iso_ms(st.account.clock.now_ms())
    results: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for aid in ids:
        if aid not in st.tracking.records:
            errors.append(
                {
                    "error_key": "reportingsvc.not_found.campaign_activity_ids",
                    "error_message": f"Could not find any stats for campaign activity {aid}.",
                }
            )
            continue
        results.append(
            {
                "campaign_id": st.tracking.activity_campaigns[aid],
                "campaign_activity_id": aid,
                "stats": st.tracking.stats(aid),
                "last_refresh_time": now,
            }
        )
    return json_response({"results": results, "errors": errors})


@routes.get("/v3/reports/contact_reports/{contact_id}/activity_details")
async def contact_activity(request: web.Request) -> web.Response:
    """A contact's tracking activities, newest first, ``limit`` <= 100, no date filter."""
    st = request.app[STATE]
    contact_id = request.match_info["contact_id"]
    st.account.contact(contact_id)
    q = request.query
    listed = [t for t in q.get("tracking_activities_list", "").split(",") if t]
    repeated = q.getall("tracking_activity_type", [])
    if listed and repeated:
        raise Invalid("tracking_activities_list and tracking_activity_type are mutually exclusive")
    kinds = listed or repeated
    if not kinds:
        raise Invalid("tracking_activities_list: required (or tracking_activity_type)")
    for k in kinds:
        if k not in CONTACT_KINDS:
            raise Invalid(f"tracking_activities_list: {k!r} is not one of {sorted(CONTACT_KINDS)}")
    names_text = q.get("include_campaign_activity_names", "true").lower()
    if names_text not in ("true", "false"):
        raise Invalid(f"include_campaign_activity_names: {names_text!r} is not true or false")
    limit = int_param(q, "limit", 100, 1, 100)
    wanted = set(kinds)
    now = st.account.clock.now_ms()
    records = sorted(
        (
            r
            for r in st.tracking.by_contact.get(contact_id, [])
            if r.kind in wanted and r.created <= now
        ),
        key=lambda r: r.created,
    )
    page, rest = _page(records, _position(request, len(records)), limit)
    out: dict[str, Any] = {
        "tracking_activities": [
            st.tracking.render(r, report=False, names=names_text == "true") for r in page
        ],
        "_links": {},
    }
    if rest > 0:
        out["_links"] = {
            "next": {
                "href": f"{request.path}?tracking_activities_list={','.join(kinds)}"
                f"&limit={limit}&cursor={rest}"
            }
        }
    return json_response(out)
