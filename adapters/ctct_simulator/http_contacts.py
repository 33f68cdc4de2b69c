"""HTTP handlers for /v3/contacts and its sub-paths."""

from __future__ import annotations

from aiohttp import web

from adapters.ctct_simulator.bodies import ContactPostIn, ContactPutIn, ResubscribeIn, SignUpIn
from adapters.ctct_simulator.contact import INCLUDES, include_mask
from adapters.ctct_simulator.errors import Invalid
from adapters.ctct_simulator.http_util import decode_body
from adapters.ctct_simulator.query import count, encode_cursor, parse_query, scan
from adapters.ctct_simulator.state import STATE, json_response
from adapters.ctct_simulator.writes import apply_put, create_contact, sign_up

__all__ = ["routes"]

routes = web.RouteTableDef()


def _include(request: web.Request) -> int:
    names = [n.strip() for n in request.query.get("include", "").split(",") if n.strip()]
    for name in names:
        if name not in INCLUDES:
            raise Invalid(f"include: {name!r} is not one of {sorted(INCLUDES)}")
    return include_mask(names)


@routes.get("/v3/contacts")
async def list_contacts(request: web.Request) -> web.Response:
    """GET /contacts: filters, include, include_count and cursor paging."""
    st = request.app[STATE]
    query, after = parse_query(request.query)
    page, next_after = scan(st.account, query, after)
    mask = query.include
    parts = [b'{"contacts":[', b",".join([c.encoded(mask) for c in page]), b"]"]
    if query.include_count:
        parts.append(b',"contacts_count":%d' % count(st.account, query))
    if next_after is not None:
        if st.faults.repeat_item():
            next_after -= 1  # fault: the next page starts with this page's last contact
        cursor = encode_cursor(query, next_after)
        parts.append(b',"_links":{"next":{"href":"/v3/contacts?cursor=%s"}}' % cursor.encode())
    parts.append(b"}")
    return web.Response(body=b"".join(parts), content_type="application/json")


@routes.post("/v3/contacts")
async def post_contact(request: web.Request) -> web.Response:
    """POST /contacts: create only (409 for any known address)."""
    st = request.app[STATE]
    body = await decode_body(request, ContactPostIn)
    c = create_contact(st.account, body)
    return web.Response(body=c.encoded(63), status=201, content_type="application/json")


@routes.get("/v3/contacts/counts")
async def contact_counts(request: web.Request) -> web.Response:
    """GET /contacts/counts: totals per consent state (deleted contacts not counted)."""
    st = request.app[STATE]
    inc = request.query.get("include")
    if inc is not None and inc != "new_subscriber":
        raise Invalid(f"include: {inc!r} is not new_subscriber")
    counts = {"total": 0, "explicit": 0, "implicit": 0, "pending": 0, "unsubscribed": 0}
    for c in st.account.contacts:
        if c.deleted_at is not None:
            continue
        counts["total"] += 1
        key = "pending" if c.permission == "pending_confirmation" else c.permission
        if key in counts:
            counts[key] += 1
    if inc:
        week_ago = st.clock.now_ms() - 7 * 24 * 3600 * 1000
        counts["new_subscriber"] = sum(
            1 for c in st.account.contacts if c.deleted_at is None and c.created_at > week_ago
        )
    return json_response(counts)


@routes.post("/v3/contacts/sign_up_form")
async def sign_up_form(request: web.Request) -> web.Response:
    """POST /contacts/sign_up_form: upsert by address; existing contacts become explicit."""
    st = request.app[STATE]
    body = await decode_body(request, SignUpIn)
    c, created = sign_up(st.account, body, confirmed_opt_in=st.config.confirmed_opt_in)
    return json_response(
        {"contact_id": c.contact_id, "action": "created" if created else "updated"},
        status=201 if created else 200,
    )


@routes.put("/v3/contacts/resubscribe/{contact_id}")
async def resubscribe(request: web.Request) -> web.Response:
    """PUT /contacts/resubscribe/{id}: sends the one confirmation; the contact stays out."""
    st = request.app[STATE]
    body = await decode_body(request, ResubscribeIn)
    st.account.send_resubscribe(request.match_info["contact_id"], tuple(body.list_ids))
    return web.Response(status=200)


@routes.get("/v3/contacts/{contact_id}")
async def get_contact(request: web.Request) -> web.Response:
    """GET /contacts/{id} (deleted contacts are readable by id)."""
    st = request.app[STATE]
    c = st.account.contact(request.match_info["contact_id"])
    return web.Response(body=c.encoded(_include(request)), content_type="application/json")


@routes.put("/v3/contacts/{contact_id}")
async def put_contact(request: web.Request) -> web.Response:
    """PUT /contacts/{id}: core fields replaced, sub-resources kept unless sent, revives."""
    st = request.app[STATE]
    c = st.account.contact(request.match_info["contact_id"])
    body = await decode_body(request, ContactPutIn)
    apply_put(st.account, c, body)
    return web.Response(body=c.encoded(63), content_type="application/json")


@routes.delete("/v3/contacts/{contact_id}")
async def delete_contact(request: web.Request) -> web.Response:
    """DELETE /contacts/{id}: soft delete, 204."""
    st = request.app[STATE]
    st.account.delete_contact(request.match_info["contact_id"])
    return web.Response(status=204)
