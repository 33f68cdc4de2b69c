"""The narrow seam under the client: send one HTTP request, get (status, body) back.

``AiohttpTransport`` is the real one (one ClientSession per adapter). It reads the whole body
and maps every aiohttp/timeout failure to ``TransportError``, so nothing from aiohttp leaks past
this module. Tests wrap a transport to record and check every request the adapter sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import aiohttp
import msgspec

from engine.errors import RetriableError

__all__ = ["AiohttpTransport", "Request", "Response", "Transport", "TransportError"]


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """One request as sent (headers carry the bearer token: never log them)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None


class Response(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes
    content_type: str = ""


class TransportError(RetriableError):
    """The request may not have reached the server, or its answer was cut off."""


class Transport(Protocol):
    async def send(self, request: Request) -> Response: ...


class AiohttpTransport:
    """Sends requests on one aiohttp ClientSession with explicit timeouts."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._previous = b""

    async def send(self, request: Request) -> Response:
        try:
            async with self._session.request(
                request.method, request.url, headers=request.headers, data=request.body
            ) as resp:
                body = await resp.read()
                # Held until the next answer: freeing a page-sized body as soon as it is decoded
                # lets glibc hand the heap top back to the OS and fault it in again for the next
                # page (~450 page faults a page); held, its memory is reused.
                self._previous = body
                return Response(status=resp.status, body=body, content_type=resp.content_type)
        except TimeoutError as exc:
            raise TransportError(f"{request.method} {_path(request.url)}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(
                f"{request.method} {_path(request.url)}: {type(exc).__name__}: {exc}"
            ) from exc
        except asyncio.IncompleteReadError as exc:
            raise TransportError(f"{request.method} {_path(request.url)}: body cut off") from exc


def _path(url: str) -> str:
    """The URL without scheme and host, for messages."""
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else url


def headers_without_secrets(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if k.lower() == "authorization" else v) for k, v in headers.items()}
