"""A test client for the simulator that checks every request and every answer against the
swagger file: requests against the operation's parameters and body schema, 2xx bodies against
the response schema, and error bodies against Constant Contact's documented shapes (arrays of
``{error_key, error_message}``; single objects for 401 and 429)."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from tests.simulator.swagger import SpecViolation, SwaggerSpec

__all__ = ["Reply", "SpecClient"]


class Reply(msgspec.Struct, frozen=True):
    """Status, decoded JSON body (None when empty) and headers of one answer."""

    status: int
    body: Any
    headers: dict[str, str]


def check_error_shape(status: int, body: Any) -> None:
    """401 and 429 answer one object; other errors an array of error objects."""
    if status in (401, 429):
        ok = isinstance(body, dict) and {"error_key", "error_message"} <= body.keys()
    else:
        ok = (
            isinstance(body, list)
            and len(body) > 0
            and all(
                isinstance(e, dict) and {"error_key", "error_message"} <= e.keys() for e in body
            )
        )
    if not ok:
        raise SpecViolation(f"error body of a {status} has the wrong shape: {body!r}")


class SpecClient:
    """Calls the simulator's /v3 API with a bearer token, validating both directions."""

    def __init__(
        self, session: aiohttp.ClientSession, root_url: str, spec: SwaggerSpec, token: str
    ) -> None:
        self.session = session
        self.root_url = root_url
        self.spec = spec
        self.token = token
        self.checked = 0

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        check_request: bool = True,
        token: str | None = None,
    ) -> Reply:
        """``path`` is ``/v3/...`` (as in ``_links`` hrefs), with or without a query."""
        url = self.root_url + path
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        if check_request:
            self.spec.validate_request(method, url, json)
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        data: bytes | io.BytesIO | None = None
        if json is not None:
            headers["Content-Type"] = "application/json"
            data = msgspec.json.encode(json)
            if len(data) > 1024 * 1024:
                data = io.BytesIO(data)  # aiohttp warns about large raw bodies
        async with self.session.request(method, url, data=data, headers=headers) as resp:
            raw = await resp.read()
            status, resp_headers = resp.status, dict(resp.headers)
        body = msgspec.json.decode(raw) if raw else None
        template, _ = self.spec.match(url.split("?")[0].replace(self.root_url, ""))
        if 200 <= status < 300:
            self.spec.validate_response(method, template, status, body)
        else:
            check_error_shape(status, body)
        self.checked += 1
        return Reply(status, body, resp_headers)

    async def get(self, path: str, **params: str) -> Reply:
        """GET with query parameters."""
        return await self.call("GET", path, params=params or None)

    async def all_contacts(self, path: str = "/v3/contacts", **params: str) -> list[dict[str, Any]]:
        """Follow ``_links.next.href`` to the end; returns every contact seen."""
        reply = await self.get(path, **params)
        assert reply.status == 200, reply.body
        out = list(reply.body["contacts"])
        while "next" in reply.body.get("_links", {}):
            reply = await self.call("GET", reply.body["_links"]["next"]["href"])
            assert reply.status == 200, reply.body
            out.extend(reply.body["contacts"])
        return out
