"""HTTP handlers for contact lists and bulk activities."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web

from adapters.ctct_simulator.activities import Activity, ActivityKind
from adapters.ctct_simulator.bodies import ContactDeleteIn, ImportIn, ListIn, MembershipIn
from adapters.ctct_simulator.clock import iso_ms
from adapters.ctct_simulator.errors import Invalid, NotFound
from adapters.ctct_simulator.http_util import decode_body, int_param
from adapters.ctct_simulator.records import ContactList
from adapters.ctct_simulator.state import STATE, SimState, json_response

__all__ = ["routes"]

MAX_IMPORT_ROWS: Final = 40_000
MAX_IMPORT_BYTES: Final = 4 * 1024 * 1024
routes = web.RouteTableDef()


def _render_list(lst: ContactList, counts: dict[str, int] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "list_id": lst.list_id,
        "name": lst.name,
        "favorite": lst.favorite,
        "created_at": iso_ms(lst.created_at),
        "updated_at": iso_ms(lst.updated_at),
    }
    if lst.description is not None:
        out["description"] = lst.description
    if lst.deleted_at is not None:
        out["deleted_at"] = iso_ms(lst.deleted_at)
    if counts is not None:
        out["membership_count"] = counts.get(lst.list_id, 0)
    return out


def _membership_counts(st: SimState, request: web.Request) -> dict[str, int] | None:
    which = request.query.get("include_membership_count")
    if which is None:
        return None
    if which not in ("all", "active"):
        raise Invalid(f"include_membership_count: {which!r} is not all or active")
    return st.account.membership_counts(active_only=which == "active")


@routes.get("/v3/contact_lists")
async def get_lists(request: web.Request) -> web.Response:
    """GET /contact_lists (no updated-date filter exists; clients re-read them all)."""
    st = request.app[STATE]
    q = request.query
    limit = int_param(q, "limit", 50, 1, 1000)
    status = q.get("status", "active")
    if status not in ("all", "active", "deleted"):
        raise Invalid(f"status: {status!r} is not one of all, active, deleted")
    offset = 0
    if "cursor" in q:
        try:
            offset = int(q["cursor"])
        except ValueError:
            raise Invalid(f"cursor: {q['cursor']!r} is not a valid cursor") from None
    lists = [
        x
        for x in st.account.lists.values()
        if status == "all" or (status == "deleted") == (x.deleted_at is not None)
    ]
    if "name" in q:
        lists = [x for x in lists if x.name == q["name"]]
    counts = _membership_counts(st, request)
    page = lists[offset : offset + limit]
    out: dict[str, Any] = {"lists": [_render_list(x, counts) for x in page]}
    if q.get("include_count", "false").lower() == "true":
        out["lists_count"] = len(lists)
    if offset + limit < len(lists):
        out["_links"] = {
            "next": {"href": f"/v3/contact_lists?cursor={offset + limit}&limit={limit}"}
        }
    return json_response(out)


@routes.post("/v3/contact_lists")
async def post_list(request: web.Request) -> web.Response:
    """POST /contact_lists (409 for a name in use)."""
    st = request.app[STATE]
    body = await decode_body(request, ListIn)
    lst = st.account.add_list(body.name, body.description)
    lst.favorite = body.favorite
    return json_response(_render_list(lst, None), status=201)


@routes.get("/v3/contact_lists/{list_id}")
async def get_list(request: web.Request) -> web.Response:
    """GET /contact_lists/{id}."""
    st = request.app[STATE]
    lst = st.account.lists.get(request.match_info["list_id"])
    if lst is None:
        raise NotFound(f"List {request.match_info['list_id']} not found.")
    return json_response(_render_list(lst, _membership_counts(st, request)))


@routes.put("/v3/contact_lists/{list_id}")
async def put_list(request: web.Request) -> web.Response:
    """PUT /contact_lists/{id}."""
    st = request.app[STATE]
    lst = st.account.contact_list(request.match_info["list_id"])
    body = await decode_body(request, ListIn)
    lst.name, lst.favorite = body.name, body.favorite
    if body.description is not None:
        lst.description = body.description
    lst.updated_at = st.account.stamp()
    return json_response(_render_list(lst, None))


@routes.delete("/v3/contact_lists/{list_id}")
async def delete_list(request: web.Request) -> web.Response:
    """DELETE /contact_lists/{id}: asynchronous, 202 with an activity."""
    st = request.app[STATE]
    lst = st.account.contact_list(request.match_info["list_id"])
    act = _submit(st, "list_delete", [lst.list_id], [lst.list_id])
    body = act.render()
    body.pop("status", None)
    return json_response(
        body, status=202, headers={"Location": f"/v3/activities/{act.activity_id}"}
    )


def _submit(st: SimState, kind: ActivityKind, items: list[Any], list_ids: list[str]) -> Activity:
    act = st.activities.submit(kind, items, list_ids)
    if st.work_ready is not None and st.config.auto_process:
        st.work_ready.set()
    return act


@routes.post("/v3/activities/contacts_json_import")
async def json_import(request: web.Request) -> web.Response:
    """POST /activities/contacts_json_import: at most 40,000 rows; bytes past 4 MB are dropped."""
    st = request.app[STATE]
    body = await decode_body(request, ImportIn)
    if len(body.import_data) > MAX_IMPORT_ROWS:
        raise Invalid(f"import_data: {len(body.import_data)} contacts, at most {MAX_IMPORT_ROWS}")
    st.account.check_lists(body.list_ids, "list_ids")
    rows = body.import_data
    if request.content_length and request.content_length >= MAX_IMPORT_BYTES:
        # Constant Contact silently drops what lies past 4 MB: keep the rows that fit.
        enc = msgspec.json.Encoder()
        size, kept = 0, 0
        for row in rows:
            size += len(enc.encode(row)) + 1
            if size >= MAX_IMPORT_BYTES - 1024:
                break
            kept += 1
        rows = rows[:kept]
    act = _submit(st, "contacts_json_import", list(rows), body.list_ids)
    return json_response(act.render(), status=201)


def _membership_items(st: SimState, body: MembershipIn) -> list[str]:
    src = body.source
    chosen = [x for x in (src.contact_ids, src.list_ids) if x is not None]
    if len(chosen) + int(src.all_active_contacts) != 1:
        raise Invalid("source: give exactly one of contact_ids, list_ids, all_active_contacts")
    st.account.check_lists(body.list_ids, "list_ids")
    excluded = set(body.exclude.contact_ids) if body.exclude else set()
    if src.contact_ids is not None:
        return list(dict.fromkeys(src.contact_ids))
    if src.list_ids is not None:
        st.account.check_lists(src.list_ids, "source.list_ids")
        wanted = set(src.list_ids)
        return [
            c.contact_id
            for c in st.account.contacts
            if c.deleted_at is None
            and not wanted.isdisjoint(c.lists)
            and c.contact_id not in excluded
        ]
    return [
        c.contact_id
        for c in st.account.contacts
        if c.deleted_at is None
        and c.permission in ("explicit", "implicit")
        and c.contact_id not in excluded
    ]


@routes.post("/v3/activities/add_list_memberships")
async def add_memberships(request: web.Request) -> web.Response:
    """POST /activities/add_list_memberships."""
    st = request.app[STATE]
    body = await decode_body(request, MembershipIn)
    act = _submit(st, "add_list_memberships", _membership_items(st, body), body.list_ids)
    return json_response(act.render(), status=201)


@routes.post("/v3/activities/remove_list_memberships")
async def remove_memberships(request: web.Request) -> web.Response:
    """POST /activities/remove_list_memberships."""
    st = request.app[STATE]
    body = await decode_body(request, MembershipIn)
    act = _submit(st, "remove_list_memberships", _membership_items(st, body), body.list_ids)
    return json_response(act.render(), status=201)


@routes.post("/v3/activities/contact_delete")
async def contact_delete(request: web.Request) -> web.Response:
    """POST /activities/contact_delete: contact_ids (<= 500) or list_ids (<= 50)."""
    st = request.app[STATE]
    body = await decode_body(request, ContactDeleteIn)
    if (body.contact_ids is None) == (body.list_ids is None):
        raise Invalid("body: give exactly one of contact_ids, list_ids")
    if body.contact_ids is not None:
        items = list(dict.fromkeys(body.contact_ids))
        list_ids: list[str] = []
    else:
        list_ids = body.list_ids or []
        st.account.check_lists(list_ids, "list_ids")
        wanted = set(list_ids)
        items = [c.contact_id for c in st.account.contacts if not wanted.isdisjoint(c.lists)]
    act = _submit(st, "contact_delete", items, list_ids)
    return json_response(act.render(), status=201)


@routes.get("/v3/activities")
async def list_activities(request: web.Request) -> web.Response:
    """GET /activities: the account's bulk jobs, newest first."""
    st = request.app[STATE]
    limit = int_param(request.query, "limit", 50, 1, 500)
    state = request.query.get("state")
    acts = list(reversed(st.activities.by_id.values()))
    if state is not None:
        acts = [a for a in acts if a.state == state]
    return json_response({"activities": [a.render() for a in acts[:limit]]})


@routes.get("/v3/activities/{activity_id}")
async def get_activity(request: web.Request) -> web.Response:
    """GET /activities/{id}: each poll advances the activity one step."""
    st = request.app[STATE]
    act = st.activities.by_id.get(request.match_info["activity_id"])
    if act is None:
        raise NotFound(f"Activity {request.match_info['activity_id']} not found.")
    st.activities.step(act)
    return json_response(act.render())
