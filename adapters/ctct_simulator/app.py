"""The aiohttp application: routes, and the middleware every request passes through.

The middleware counts requests per endpoint, checks the bearer token (401, single object),
applies the per-key rate limits (429, single object: ``throttled`` or ``quota_exceeded``),
injects the configured faults, and turns ApiError into Constant Contact's error bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from adapters.ctct_simulator import (
    http_admin,
    http_bulk,
    http_contacts,
    http_fields,
    http_oauth,
    http_tracking,
)
from adapters.ctct_simulator.errors import ApiError
from adapters.ctct_simulator.journal import RecordedRequest
from adapters.ctct_simulator.state import STATE, SimState, json_response

__all__ = ["build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_log = structlog.get_logger("ccsync.simulator")
UNAUTHORIZED = {"error_key": "unauthorized", "error_message": "Unauthorized"}
THROTTLED = {"error_key": "throttled", "error_message": "Too Many Requests"}
_CAMPAIGN_PATHS = ("/v3/emails", "/v3/reports/email_reports")
QUOTA = {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}


def _endpoint(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), exc.status)
    except web.HTTPNotFound:
        return json_response(
            [{"error_key": "not_found", "error_message": f"No such resource: {request.path}"}], 404
        )
    except web.HTTPMethodNotAllowed:
        return json_response(
            [
                {
                    "error_key": "method_not_allowed",
                    "error_message": f"{request.method} is not allowed on {request.path}",
                }
            ],
            405,
        )


async def _cut(request: web.Request, resp: web.Response) -> web.StreamResponse:
    """Fault: promise the whole body, send half of it, then reset the connection."""
    body = bytes(resp.body) if isinstance(resp.body, bytes | bytearray) else b""
    stream = web.StreamResponse(status=resp.status, headers={"Content-Type": "application/json"})
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # the handler is over: nothing more can be sent


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count (and journal), authenticate, rate-limit, inject faults, shape errors (module doc)."""
    st: SimState = request.app[STATE]
    st.tracking.settle()  # what the campaigns' recipients have done by now
    st.requests[_endpoint(request)] += 1
    if st.journal is not None:
        body = await request.read() if request.body_exists else b""  # cached for the handler
        st.journal.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                endpoint=_endpoint(request),
                query_string=request.query_string,
                body=body,
            )
        )
    if not request.path.startswith("/v3/"):
        return await _guarded(request, handler)
    header = request.headers.get("Authorization", "")
    grant = st.auth.check(header[7:]) if header.startswith("Bearer ") else None
    if grant is None:
        return json_response(UNAUTHORIZED, 401)
    needed = "campaign_data" if request.path.startswith(_CAMPAIGN_PATHS) else "contact_data"
    if needed not in grant.scope.split():
        denied = [
            {"error_key": "forbidden", "error_message": f"The token lacks the {needed} scope."}
        ]
        return json_response(denied, 403)
    if st.rate_limits:
        verdict = st.limiter.check(grant.client_id, st.clock.now_ms())
        if verdict != "ok":
            return json_response(THROTTLED if verdict == "throttled" else QUOTA, 429)
    faults = st.faults
    if faults.config.latency_ms:
        await asyncio.sleep(faults.config.latency_ms / 1000)  # the fault itself, not a sync
    kind = faults.draw()
    if kind == "error500":
        return json_response(
            [
                {
                    "error_key": "server_error",
                    "error_message": "There was a problem with our internal service.",
                }
            ],
            500,
        )
    if kind == "error503":
        return json_response(
            [
                {
                    "error_key": "service_unavailable",
                    "error_message": "Our internal service is temporarily unavailable.",
                }
            ],
            503,
        )
    resp = await _guarded(request, handler)
    if kind != "none":
        _log.info("simulator.fault", kind=kind, endpoint=_endpoint(request))
    if isinstance(resp, web.Response) and isinstance(resp.body, bytes) and len(resp.body) > 1:
        if kind == "truncate":
            body = resp.body
            return web.Response(
                body=body[: len(body) // 2], status=resp.status, content_type="application/json"
            )
        if kind == "reset":
            return await _cut(request, resp)
    return resp


def build_app(state: SimState) -> web.Application:
    """The whole simulator as one aiohttp application."""
    app = web.Application(middlewares=[api_middleware], client_max_size=16 * 1024 * 1024)
    app[STATE] = state
    for module in (http_oauth, http_contacts, http_fields, http_bulk, http_tracking, http_admin):
        app.add_routes(module.routes)
    return app
