"""Helpers shared by the HTTP handlers: body decoding and parameter parsing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import msgspec
from aiohttp import web

from adapters.ctct_simulator.errors import ApiError, Invalid

__all__ = ["decode_body", "int_param"]

_T = TypeVar("_T")


async def decode_body(request: web.Request, kind: type[_T]) -> _T:
    """Decode a JSON body into ``kind``; 415 without a JSON content type, 400 naming the field."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    raw = await request.read()
    try:
        # msgspec caches what it learns about ``kind``: no decoder cache of our own needed
        value: _T = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Invalid(f"body: malformed JSON ({exc})", "general.json.syntax") from None
    return value


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; Invalid naming it otherwise."""
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Invalid(f"{name}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise Invalid(f"{name}: {value} is not between {low} and {high}")
    return value
