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

from .schema import Contact, ContactList, EmailAddress

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
_PHONE_KEY: Final = {kind: f"phone_{kind}" for kind in PHONE_KINDS}
_encoder: Final = msgspec.json.Encoder()


def utc(ts: datetime | None) -> datetime | None:
    """Aware UTC; a naive time from the API is taken as UTC."""
    if ts is None or ts.tzinfo is UTC:  # the common case: msgspec decodes ``Z`` as UTC
        return ts
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _too_long(cid: str, field: str, value: str, limit: int) -> SkippableRecordError:
    return SkippableRecordError(cid, field, f"{len(value)} characters, the limit is {limit}")


def _fields(c: Contact) -> dict[str, str]:
    # The hot path of observation (100,000 calls per full fetch): plain attribute reads and
    # no loops or sets for what a contact does not have.
    cid = c.contact_id
    out: dict[str, str] = {}
    if v := c.first_name:
        if len(v) > _MAX_CORE:
            raise _too_long(cid, "first_name", v, _MAX_CORE)
        out["first_name"] = v
    if v := c.last_name:
        if len(v) > _MAX_CORE:
            raise _too_long(cid, "last_name", v, _MAX_CORE)
        out["last_name"] = v
    if v := c.job_title:
        if len(v) > _MAX_CORE:
            raise _too_long(cid, "job_title", v, _MAX_CORE)
        out["job_title"] = v
    if v := c.company_name:
        if len(v) > _MAX_CORE:
            raise _too_long(cid, "company_name", v, _MAX_CORE)
        out["company_name"] = v
    if c.birthday_month is not None:
        if not 1 <= c.birthday_month <= 12:
            raise SkippableRecordError(cid, "birthday_month", f"{c.birthday_month} not in 1..12")
        out["birthday_month"] = str(c.birthday_month)
    if c.birthday_day is not None:
        if not 1 <= c.birthday_day <= 31:
            raise SkippableRecordError(cid, "birthday_day", f"{c.birthday_day} not in 1..31")
        out["birthday_day"] = str(c.birthday_day)
    if c.anniversary:
        if len(c.anniversary) > 10:
            raise _too_long(cid, "anniversary", c.anniversary, 10)
        out["anniversary"] = c.anniversary
    if c.phone_numbers:
        _phones(c, out)
    if c.street_addresses:
        _addresses(c, out)
    for cf in c.custom_fields:
        if cf.value:
            key = f"cf:{cf.custom_field_id}"
            if len(cf.value) > _MAX_CF:
                raise _too_long(cid, key, cf.value, _MAX_CF)
            out[key] = cf.value
    return out


def _phones(c: Contact, out: dict[str, str]) -> None:
    cid = c.contact_id
    for i, phone in enumerate(c.phone_numbers):
        kind = phone.kind or "other"
        if kind not in PHONE_KINDS:
            raise SkippableRecordError(cid, f"phone_numbers[{i}].kind", f"unknown value {kind!r}")
        number = phone.phone_number
        if number:
            key = _PHONE_KEY[kind]
            if len(number) > _MAX_PHONE:
                raise _too_long(cid, key, number, _MAX_PHONE)
            # Up to 3 phones; two of one kind cannot both live in a flat field: the first wins.
            out.setdefault(key, number)


def _addresses(c: Contact, out: dict[str, str]) -> None:
    cid = c.contact_id
    seen_kinds: set[str] = set()
    for i, addr in enumerate(c.street_addresses):
        kind = addr.kind or "home"
        if kind not in ADDRESS_KINDS:
            raise SkippableRecordError(
                cid, f"street_addresses[{i}].kind", f"unknown value {kind!r}"
            )
        if kind in seen_kinds:
            continue
        seen_kinds.add(kind)
        for part in ADDRESS_PARTS:
            value = getattr(addr, part)
            if value:
                key = f"address_{kind}_{part}"
                if len(value) > _MAX_PART[part]:
                    raise _too_long(cid, key, value, _MAX_PART[part])
                out[key] = value


def _permission(c: Contact, e: EmailAddress) -> PermissionState:
    status = e.permission_to_send or "not_set"
    if status not in PERMISSIONS:
        raise SkippableRecordError(
            c.contact_id, "email_address.permission_to_send", f"unknown value {status!r}"
        )
    if e.opt_out_source is not None and e.opt_out_source not in _SOURCES:
        raise SkippableRecordError(
            c.contact_id, "email_address.opt_out_source", f"unknown value {e.opt_out_source!r}"
        )
    if e.opt_in_source is not None and e.opt_in_source not in _SOURCES:
        raise SkippableRecordError(
            c.contact_id, "email_address.opt_in_source", f"unknown value {e.opt_in_source!r}"
        )
    reason = e.opt_out_reason
    if reason is not None and len(reason) > 255:
        raise _too_long(c.contact_id, "email_address.opt_out_reason", reason, 255)
    if status == "unsubscribed":
        return PermissionState(
            status="unsubscribed",
            source=e.opt_out_source or e.opt_in_source,
            reason=reason,
            changed_at=utc(e.updated_at or e.opt_out_date),
        )
    return PermissionState(
        status=status,  # type: ignore[arg-type]  # checked against PERMISSIONS above
        source=e.opt_in_source,
        changed_at=utc(e.updated_at or e.opt_out_date),
    )


def _to_record(c: Contact) -> ContactRecord:
    e = c.email_address
    if e is None or not e.address:
        raise SkippableRecordError(c.contact_id, "email_address.address", "missing")
    if len(e.address) > _MAX_EMAIL:
        raise _too_long(c.contact_id, "email_address.address", e.address, _MAX_EMAIL)
    email = normalise_email(e.address)
    if not is_valid_email(email):
        raise SkippableRecordError(
            c.contact_id, "email_address.address", f"not an email address: {e.address!r}"
        )
    updated, email_updated = utc(c.updated_at), utc(e.updated_at)
    if updated is None or (email_updated is not None and email_updated > updated):
        updated = email_updated
    lists = c.list_memberships
    return ContactRecord(
        store_id=c.contact_id,
        email=email,
        fields=_fields(c),
        permission=_permission(c, e),
        lists=tuple(sorted(set(lists))) if len(lists) > 1 else tuple(lists),
        deleted=bool(c.deleted_at),
        updated_at=updated,
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
