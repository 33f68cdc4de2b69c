"""HTTP handlers of the authorization server (under /oauth2/default/v1/)."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlencode

from aiohttp import web

from adapters.ctct_simulator.auth import DEFAULT_SCOPE, OAuthError
from adapters.ctct_simulator.state import STATE, json_response

__all__ = ["routes"]

routes = web.RouteTableDef()


def _basic(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic authorization", 401) from None
    return user, secret


@routes.get("/oauth2/default/v1/authorize")
async def authorize(request: web.Request) -> web.Response:
    """Approve at once and redirect to the registered redirect_uri with a code."""
    st = request.app[STATE]
    q = request.query
    if q.get("response_type") != "code":
        err = OAuthError("unsupported_response_type", "response_type must be code")
        return json_response(err.body(), status=err.status)
    try:
        code = st.auth.authorize(
            client_id=q.get("client_id", ""),
            redirect_uri=q.get("redirect_uri", ""),
            scope=q.get("scope", DEFAULT_SCOPE),
            challenge=q.get("code_challenge", ""),
            method=q.get("code_challenge_method", ""),
        )
    except OAuthError as exc:
        return json_response(exc.body(), status=exc.status)
    params = {"code": code}
    if "state" in q:
        params["state"] = q["state"]
    raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(params)}")


@routes.post("/oauth2/default/v1/device/authorize")
async def device_authorize(request: web.Request) -> web.Response:
    """Start a device flow (the simulated user approves at once)."""
    st = request.app[STATE]
    form = await request.post()
    try:
        device_code, user_code = st.auth.device_authorize(
            str(form.get("client_id", "")), str(form.get("scope", DEFAULT_SCOPE))
        )
    except OAuthError as exc:
        return json_response(exc.body(), status=exc.status)
    base = f"{request.scheme}://{request.host}"
    return json_response(
        {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"{base}/activate",
            "verification_uri_complete": f"{base}/activate?user_code={user_code}",
            "expires_in": 600,
            "interval": 1,
        }
    )


@routes.post("/oauth2/default/v1/token")
async def token(request: web.Request) -> web.Response:
    """The token endpoint (1 request/s per client when rate limits are on)."""
    st = request.app[STATE]
    if request.content_type != "application/x-www-form-urlencoded":
        err = OAuthError(
            "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
        )
        return json_response(err.body(), status=err.status)
    try:
        basic = _basic(request)
        form = {k: str(v) for k, v in (await request.post()).items()}
        client = basic[0] if basic else form.get("client_id", "")
        if st.rate_limits and st.token_limiter.check(client, st.clock.now_ms()) != "ok":
            return json_response(
                {"error_key": "throttled", "error_message": "Too Many Requests"}, 429
            )
        tokens = st.auth.token(form, basic)
    except OAuthError as exc:
        return json_response(exc.body(), status=exc.status)
    body = {
        "token_type": tokens.token_type,
        "expires_in": tokens.expires_in,
        "access_token": tokens.access_token,
        "scope": tokens.scope,
    }
    if tokens.refresh_token is not None:
        body["refresh_token"] = tokens.refresh_token
    return json_response(body, headers={"Cache-Control": "no-store"})
