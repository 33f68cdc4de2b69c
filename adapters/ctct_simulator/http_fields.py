"""HTTP handlers for custom field definitions (/v3/contact_custom_fields)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from adapters.ctct_simulator.clock import iso_ms
from adapters.ctct_simulator.errors import Invalid, NotFound
from adapters.ctct_simulator.http_util import decode_body, int_param
from adapters.ctct_simulator.records import CustomFieldDef
from adapters.ctct_simulator.state import STATE, json_response

__all__ = ["CustomFieldIn", "routes"]

routes = web.RouteTableDef()


class CustomFieldIn(msgspec.Struct, kw_only=True):
    """``CustomFieldRequest`` (choices and metadata are not simulated)."""

    label: Annotated[str, Meta(min_length=1, max_length=50)]
    type: Annotated[str, Meta(max_length=20)] = "string"


def _render(d: CustomFieldDef) -> dict[str, Any]:
    return {
        "custom_field_id": d.custom_field_id,
        "label": d.label,
        "name": d.name,
        "type": d.type,
        "created_at": iso_ms(d.created_at),
        "updated_at": iso_ms(d.updated_at),
    }


@routes.get("/v3/contact_custom_fields")
async def list_fields(request: web.Request) -> web.Response:
    """GET /contact_custom_fields: ``limit`` 1-100 (default 50), cursor paging."""
    st = request.app[STATE]
    limit = int_param(request.query, "limit", 50, 1, 100)
    offset = int_param(request.query, "cursor", 0, 0, 10**9)
    defs = list(st.account.custom_field_defs.values())
    out: dict[str, Any] = {"custom_fields": [_render(d) for d in defs[offset : offset + limit]]}
    if offset + limit < len(defs):
        href = f"/v3/contact_custom_fields?cursor={offset + limit}&limit={limit}"
        out["_links"] = {"next": {"href": href}}
    return json_response(out)


@routes.post("/v3/contact_custom_fields")
async def post_field(request: web.Request) -> web.Response:
    """POST /contact_custom_fields: 201, 409 when the derived name is taken."""
    st = request.app[STATE]
    body = await decode_body(request, CustomFieldIn)
    return json_response(_render(st.account.add_custom_field(body.label, body.type)), status=201)


def _get(request: web.Request) -> CustomFieldDef:
    field_id = request.match_info["custom_field_id"]
    d = request.app[STATE].account.custom_field_defs.get(field_id)
    if d is None:
        raise NotFound(f"Custom field {field_id} not found.")
    return d


@routes.get("/v3/contact_custom_fields/{custom_field_id}")
async def get_field(request: web.Request) -> web.Response:
    """GET /contact_custom_fields/{id}."""
    return json_response(_render(_get(request)))


@routes.put("/v3/contact_custom_fields/{custom_field_id}")
async def put_field(request: web.Request) -> web.Response:
    """PUT /contact_custom_fields/{id}: the label changes; the name does not."""
    d = _get(request)
    body = await decode_body(request, CustomFieldIn)
    if body.type != d.type:
        raise Invalid("type: a custom field's type cannot change")
    d.label = body.label
    d.updated_at = request.app[STATE].account.stamp()
    return json_response(_render(d))


@routes.delete("/v3/contact_custom_fields/{custom_field_id}")
async def delete_field(request: web.Request) -> web.Response:
    """DELETE /contact_custom_fields/{id}: 204; values leave every contact."""
    request.app[STATE].account.delete_custom_field(_get(request).custom_field_id)
    return web.Response(status=204)
