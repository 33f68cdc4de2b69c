"""The admin API under /__admin/: everything tests do in-process, reachable over HTTP.

No token needed (it is a local test tool). See docs/simulator.md for the reference.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from adapters.ctct_simulator.clock import iso_ms
from adapters.ctct_simulator.config import FaultConfig
from adapters.ctct_simulator.errors import Invalid
from adapters.ctct_simulator.state import STATE, SimState, json_response

__all__ = ["routes"]

routes = web.RouteTableDef()


class SeedIn(msgspec.Struct, kw_only=True):
    """POST /__admin/seed."""

    contacts: int = 1000
    seed: int = 0
    lists: int = 8
    campaigns: int = 3


class StepIn(msgspec.Struct, kw_only=True):
    """POST /__admin/world/step."""

    n: int = 1
    kinds: list[str] | None = None  # only these kinds of change (world.KINDS)


class AdvanceIn(msgspec.Struct, kw_only=True):
    """POST /__admin/clock/advance."""

    seconds: float


class EditIn(msgspec.Struct, kw_only=True):
    """POST /__admin/contacts/{id}/edit."""

    fields: dict[str, str | int | None]
    source: str = "Account"


class UnsubscribeIn(msgspec.Struct, kw_only=True):
    """POST /__admin/contacts/{id}/unsubscribe."""

    reason: str | None = None
    source: str = "Contact"


class RateLimitsIn(msgspec.Struct, kw_only=True):
    """PUT /__admin/rate_limits."""

    enabled: bool


async def _body(request: web.Request, kind: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Invalid(f"body: {exc}") from None


def _st(request: web.Request) -> SimState:
    return request.app[STATE]


@routes.get("/__admin/state")
async def state(request: web.Request) -> web.Response:
    """Summary: clock, client, counts, quota."""
    st = _st(request)
    acc = st.account
    return json_response(
        {
            "now": iso_ms(st.clock.now_ms()),
            "client_id": st.auth.client_id,
            "contacts": len(acc.contacts),
            "deleted": sum(1 for c in acc.contacts if c.deleted_at is not None),
            "unsubscribed": sum(1 for c in acc.contacts if c.permission == "unsubscribed"),
            "lists": len(acc.lists),
            "campaigns": len(st.tracking.campaigns),
            "activities_queued": len(st.activities.pending()),
            "world_steps": st.world.steps,
            "rate_limits": st.rate_limits,
            "faults": msgspec.to_builtins(st.faults.config),
            "faults_fired": st.faults.fired,
            "quota": st.quota(),
        }
    )


@routes.get("/__admin/snapshot")
async def snapshot(request: web.Request) -> web.Response:
    """The whole state: every contact (all sub-resources, deleted ones too), lists,
    campaigns, activities and tracking records."""
    st = _st(request)
    parts = [
        b'{"now":"',
        iso_ms(st.clock.now_ms()).encode(),
        b'","contacts":[',
        b",".join(c.encoded(63) for c in st.account.contacts),
        b"],",
    ]
    rest = {
        "lists": [
            {
                "list_id": x.list_id,
                "name": x.name,
                "description": x.description,
                "deleted": x.deleted_at is not None,
            }
            for x in st.account.lists.values()
        ],
        "custom_fields": st.account.custom_fields,
        "campaigns": [c.detail() for c in st.tracking.campaigns.values()],
        "activities": [a.render() for a in st.activities.by_id.values()],
        "tracking": [
            st.tracking.render(r, report=True)
            for kinds in st.tracking.records.values()
            for recs in kinds.values()
            for r in recs
        ],
        "resubscribe_sent": {k: list(v) for k, v in st.account.resubscribe_sent.items()},
    }
    parts.append(msgspec.json.encode(rest)[1:])
    return web.Response(body=b"".join(parts), content_type="application/json")


@routes.post("/__admin/seed")
async def seed(request: web.Request) -> web.Response:
    """Replace the account with a freshly seeded one (client, tokens and clock are kept)."""
    st = _st(request)
    body: SeedIn = await _body(request, SeedIn)
    st.reseed(contacts=body.contacts, seed=body.seed, lists=body.lists, campaigns=body.campaigns)
    return json_response({"contacts": len(st.account.contacts), "lists": len(st.account.lists)})


@routes.post("/__admin/world/step")
async def world_step(request: web.Request) -> web.Response:
    """Advance the living account by ``n`` events; returns what happened."""
    body: StepIn = await _body(request, StepIn)
    try:
        events = _st(request).world.step(body.n, None if body.kinds is None else tuple(body.kinds))
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return json_response({"events": msgspec.to_builtins(events)})


@routes.post("/__admin/clock/advance")
async def advance(request: web.Request) -> web.Response:
    """Move the simulator clock forward."""
    st = _st(request)
    body: AdvanceIn = await _body(request, AdvanceIn)
    if body.seconds < 0:
        raise Invalid("seconds: the clock only moves forward")
    st.clock.advance(seconds=body.seconds)
    return json_response({"now": iso_ms(st.clock.now_ms())})


@routes.get("/__admin/faults")
async def get_faults(request: web.Request) -> web.Response:
    """The fault settings and how often each fault fired."""
    st = _st(request)
    return json_response(
        {"faults": msgspec.to_builtins(st.faults.config), "fired": st.faults.fired}
    )


@routes.put("/__admin/faults")
async def put_faults(request: web.Request) -> web.Response:
    """Replace the fault settings (a FaultConfig object)."""
    st = _st(request)
    faults: FaultConfig = await _body(request, FaultConfig)
    try:
        st.set_faults(faults)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return json_response({"faults": msgspec.to_builtins(faults)})


@routes.put("/__admin/rate_limits")
async def put_rate_limits(request: web.Request) -> web.Response:
    """Switch rate limits on or off."""
    body: RateLimitsIn = await _body(request, RateLimitsIn)
    _st(request).rate_limits = body.enabled
    return json_response({"enabled": body.enabled})


@routes.get("/__admin/requests")
async def get_requests(request: web.Request) -> web.Response:
    """Requests per endpoint since the last reset."""
    return json_response(dict(_st(request).requests))


@routes.delete("/__admin/requests")
async def reset_requests(request: web.Request) -> web.Response:
    """Reset the request counts."""
    _st(request).requests.clear()
    return web.Response(status=204)


@routes.get("/__admin/quota")
async def quota(request: web.Request) -> web.Response:
    """Today's quota use of the test client's key."""
    st = _st(request)
    usage = st.quota()
    usage["resets_at"] = iso_ms(usage.pop("resets_at_ms"))
    return json_response(usage)


@routes.post("/__admin/tokens")
async def tokens(request: web.Request) -> web.Response:
    """A fresh access token and refresh token for the test client."""
    st = _st(request)
    return json_response(
        {
            **msgspec.to_builtins(st.auth.issue()),
            "client_id": st.auth.client_id,
            "client_secret": st.auth.client_secret,
        }
    )


@routes.post("/__admin/activities/drain")
async def drain(request: web.Request) -> web.Response:
    """Finish every queued bulk activity now."""
    return json_response({"finished": _st(request).activities.drain()})


@routes.post("/__admin/contacts/{contact_id}/unsubscribe")
async def unsubscribe(request: web.Request) -> web.Response:
    """The contact opts out (default source Contact)."""
    body: UnsubscribeIn = await _body(request, UnsubscribeIn)
    _st(request).account.unsubscribe(
        request.match_info["contact_id"], reason=body.reason, source=body.source
    )
    return web.Response(status=204)


@routes.post("/__admin/contacts/{contact_id}/edit")
async def edit(request: web.Request) -> web.Response:
    """Edit core fields (and ``email``) as the account owner or the contact."""
    body: EditIn = await _body(request, EditIn)
    _st(request).account.edit_contact(
        request.match_info["contact_id"], source=body.source, **body.fields
    )
    return web.Response(status=204)


@routes.put("/__admin/contacts/{contact_id}/lists/{list_id}")
async def join(request: web.Request) -> web.Response:
    """Add the contact to a list."""
    _st(request).account.join_list(request.match_info["contact_id"], request.match_info["list_id"])
    return web.Response(status=204)


@routes.delete("/__admin/contacts/{contact_id}/lists/{list_id}")
async def leave(request: web.Request) -> web.Response:
    """Remove the contact from a list."""
    _st(request).account.leave_list(request.match_info["contact_id"], request.match_info["list_id"])
    return web.Response(status=204)


@routes.delete("/__admin/contacts/{contact_id}")
async def delete(request: web.Request) -> web.Response:
    """Delete the contact (soft, as the product does)."""
    _st(request).account.delete_contact(request.match_info["contact_id"])
    return web.Response(status=204)


@routes.post("/__admin/contacts/{contact_id}/confirm_resubscribe")
async def confirm(request: web.Request) -> web.Response:
    """The contact clicks the resubscribe confirmation link."""
    _st(request).account.confirm_resubscribe(request.match_info["contact_id"])
    return web.Response(status=204)
