"""Encoding events for the log and decoding them back, upcasting older schema versions on read.

One encoder and one decoder, built once (msgspec's fast path). A row written at the current
schema version of its type decodes straight into the tagged union; an older row is decoded to
a dict, passed through the upcasters for its type in order, then converted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from engine.errors import LogCorruptError, UnknownEventError
from engine.events import EVENT_TYPES, Event, EventBase

__all__ = [
    "CURRENT_TYPES",
    "EVENT_DECODER",
    "UPCASTERS",
    "current_version",
    "decode_event",
    "encode_event",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _tracking_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    # v1 named the activity's kind "activity_type" with Constant Contact's own codes.
    activity = dict(old["activity"])
    code = activity.pop("activity_type")
    activity["kind"] = {
        "em_sends": "send",
        "em_opens": "open",
        "em_clicks": "click",
        "em_bounces": "bounce",
        "em_forwards": "forward",
        "em_optouts": "optout",
    }.get(code, code)
    return {**old, "activity": activity}


# Commands were recorded one event per command before they were recorded in batches; an old
# event reads as a batch of one whose key stays the command's id.
def _issued_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in old.items() if k not in ("kind", "command")}
    out["commands"] = [{"command_id": old["key"], "kind": old["kind"], "command": old["command"]}]
    return out


def _applied_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in old.items() if k != "detail"}
    out["applied"] = [{"command_id": old["key"], "detail": old.get("detail")}]
    return out


def _confirmed_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    return {**old, "command_ids": [old["key"]]}


# (tag, version) -> function turning a payload of that version into the next version's payload.
UPCASTERS: Final[dict[tuple[str, int], Upcaster]] = {
    ("tracking.recorded", 1): _tracking_v1_to_v2,
    ("command.issued", 1): _issued_v1_to_v2,
    ("command.applied", 1): _applied_v1_to_v2,
    ("command.confirmed", 1): _confirmed_v1_to_v2,
}

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)

# For hot loops (engine.log's replay) that inline decode_event's common case: a row whose
# (tag, version) is current decodes with EVENT_DECODER and must yield CURRENT_TYPES[tag];
# anything else goes through decode_event, which upcasts or raises the precise error.
EVENT_DECODER: Final = _decoder
CURRENT_TYPES: Final[dict[str, type[EventBase]]] = dict(EVENT_TYPES)
_dict_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def current_version(tag: str) -> int:
    """The schema version this build writes for ``tag``."""
    return EVENT_TYPES[tag].schema_version


def encode_event(event: EventBase) -> bytes:
    """Canonical JSON bytes of an event, its tag included."""
    return _encoder.encode(event)


def decode_event(tag: str, version: int, payload: bytes, *, position: int = -1) -> EventBase:
    """Decode one stored payload, upcasting it if it was written by an older schema version.

    Raises UnknownEventError for a tag or version this build does not know, and
    LogCorruptError for a payload that does not decode: reading never skips a row silently.
    """
    cls = EVENT_TYPES.get(tag)
    if cls is None:
        raise UnknownEventError(f"position {position}: unknown event type {tag!r}")
    if version == cls.schema_version:
        try:
            event: EventBase = _decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise LogCorruptError(f"position {position}: {tag} payload: {exc}") from exc
        if event.__struct_config__.tag != tag:
            raise LogCorruptError(
                f"position {position}: row type {tag!r} but payload says "
                f"{event.__struct_config__.tag!r}"
            )
        return event
    if version > cls.schema_version or version < 1:
        raise UnknownEventError(
            f"position {position}: {tag} schema version {version} is unknown to this build "
            f"(it writes {cls.schema_version})"
        )
    try:
        data = _dict_decoder.decode(payload)
        for v in range(version, cls.schema_version):
            data = UPCASTERS[(tag, v)](data)
        return msgspec.convert(data, type=cls)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        # An upcaster meets whatever an old build wrote: any shape error means a bad row.
        raise LogCorruptError(
            f"position {position}: {tag} v{version} payload cannot be upcast: {exc}"
        ) from exc
