"""Constant Contact's ContactResource -> the engine's ContactRecord, or a Rejected record.

A record is rejected (never the page) for an invalid email, an unknown enumeration value or a
field longer than the API allows; the rejection names the contact_id and the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec

from engine.errors import SkippableRecordError
from engine.model import (
    PERMISSIONS,
    ContactRecord,
    ListRecord,
    PermissionState,
    is_valid_email,
    normalise_email,
)
from engine.ports import Rejected

from .schema import Contact, ContactList

__all__ = [
    "ADDRESS_KINDS",
    "ADDRESS_PARTS",
    "CORE_FIELDS",
    "PHONE_KINDS",
    "normalise_contact",
    "normalise_list",
    "utc",
]

CORE_FIELDS: Final = ("first_name", "last_name", "job_title", "company_name")
PHONE_KINDS: Final = ("home", "work", "mobile", "other")
ADDRESS_KINDS: Final = ("home", "work", "other")
ADDRESS_PARTS: Final = ("street", "city", "state", "postal_code", "country")
_SOURCES: Final = frozenset(("Contact", "Account"))
# maxLength per the v3 swagger definitions.
_MAX_EMAIL: Final = 80
_MAX_CORE: Final = 50
_MAX_PHONE: Final = 25
_MAX_PART: Final = {"street": 255, "city": 50, "state": 50, "postal_code": 50, "country": 50}
_MAX_CF: Final = 255
_encoder: Final = msgspec.json.Encoder()


def utc(ts: datetime | None) -> datetime | None:
    """Aware UTC; a naive time from the API is taken as UTC."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _check(cid: str, field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise SkippableRecordError(cid, field, f"{len(value)} characters, the limit is {limit}")
    return value


def _fields(c: Contact) -> dict[str, str]:
    cid = c.contact_id
    out: dict[str, str] = {}
    for name in CORE_FIELDS:
        value = getattr(c, name)
        if value:
            out[name] = _check(cid, name, value, _MAX_CORE)
    if c.birthday_month is not None:
        if not 1 <= c.birthday_month <= 12:
            raise SkippableRecordError(cid, "birthday_month", f"{c.birthday_month} not in 1..12")
        out["birthday_month"] = str(c.birthday_month)
    if c.birthday_day is not None:
        if not 1 <= c.birthday_day <= 31:
            raise SkippableRecordError(cid, "birthday_day", f"{c.birthday_day} not in 1..31")
        out["birthday_day"] = str(c.birthday_day)
    if c.anniversary:
        out["anniversary"] = _check(cid, "anniversary", c.anniversary, 10)
    for i, phone in enumerate(c.phone_numbers):
        kind = phone.kind or "other"
        if kind not in PHONE_KINDS:
            raise SkippableRecordError(cid, f"phone_numbers[{i}].kind", f"unknown value {kind!r}")
        if phone.phone_number:
            key = f"phone_{kind}"
            # Up to 3 phones; two of one kind cannot both live in a flat field: the first wins.
            out.setdefault(key, _check(cid, key, phone.phone_number, _MAX_PHONE))
    for i, addr in enumerate(c.street_addresses):
        kind = addr.kind or "home"
        if kind not in ADDRESS_KINDS:
            raise SkippableRecordError(
                cid, f"street_addresses[{i}].kind", f"unknown value {kind!r}"
            )
        if any(f"address_{kind}_{part}" in out for part in ADDRESS_PARTS):
            continue
        for part in ADDRESS_PARTS:
            value = getattr(addr, part)
            if value:
                key = f"address_{kind}_{part}"
                out[key] = _check(cid, key, value, _MAX_PART[part])
    for cf in c.custom_fields:
        if cf.value:
            key = f"cf:{cf.custom_field_id}"
            out[key] = _check(cid, key, cf.value, _MAX_CF)
    return out


def _permission(c: Contact) -> PermissionState:
    e = c.email_address
    assert e is not None
    status = e.permission_to_send or "not_set"
    if status not in PERMISSIONS:
        raise SkippableRecordError(
            c.contact_id, "email_address.permission_to_send", f"unknown value {status!r}"
        )
    for name in ("opt_out_source", "opt_in_source"):
        value = getattr(e, name)
        if value is not None and value not in _SOURCES:
            raise SkippableRecordError(
                c.contact_id, f"email_address.{name}", f"unknown value {value!r}"
            )
    if e.opt_out_reason is not None:
        _check(c.contact_id, "email_address.opt_out_reason", e.opt_out_reason, 255)
    unsubscribed = status == "unsubscribed"
    return PermissionState(
        status=status,  # type: ignore[arg-type]  # checked against PERMISSIONS above
        source=(e.opt_out_source if unsubscribed else None) or e.opt_in_source,
        reason=e.opt_out_reason if unsubscribed else None,
        changed_at=utc(e.updated_at or e.opt_out_date),
    )


def _to_record(c: Contact) -> ContactRecord:
    e = c.email_address
    if e is None or not e.address:
        raise SkippableRecordError(c.contact_id, "email_address.address", "missing")
    _check(c.contact_id, "email_address.address", e.address, _MAX_EMAIL)
    email = normalise_email(e.address)
    if not is_valid_email(email):
        raise SkippableRecordError(
            c.contact_id, "email_address.address", f"not an email address: {e.address!r}"
        )
    stamps = [t for t in (utc(c.updated_at), utc(e.updated_at)) if t is not None]
    return ContactRecord(
        store_id=c.contact_id,
        email=email,
        fields=_fields(c),
        permission=_permission(c),
        lists=tuple(sorted(set(c.list_memberships))),
        deleted=bool(c.deleted_at),
        updated_at=max(stamps) if stamps else None,
    )


def normalise_contact(c: Contact, *, deleted: bool = False) -> ContactRecord | Rejected:
    """The engine's record for ``c``, or why it was rejected.

    ``deleted`` marks records from a ``status=deleted`` sweep even when the API omits
    ``deleted_at``.
    """
    try:
        record = _to_record(c)
    except SkippableRecordError as exc:
        return Rejected(
            record=exc.record,
            field=exc.field,
            problem=exc.problem,
            raw=_encoder.encode(c).decode(),
        )
    if deleted and not record.deleted:
        record = msgspec.structs.replace(record, deleted=True)
    return record


def normalise_list(lst: ContactList) -> ListRecord:
    """A contact list as the engine models it."""
    return ListRecord(
        store_id=lst.list_id,
        name=lst.name,
        description=lst.description or None,
        deleted=bool(lst.deleted_at),
        updated_at=utc(lst.updated_at),
    )
