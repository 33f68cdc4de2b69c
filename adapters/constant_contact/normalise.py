"""Constant Contact's ContactResource -> the engine's ContactRecord, or a Rejected record.

A record is rejected (never the page) for an invalid email, an unknown enumeration value or a
field longer than the API allows; the rejection names the contact_id and the field. Lengths and
enumerations are enforced by the decoder (schema.Contact, in C); what is left here is mapping
and the email rule, on the hot path of every observation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec

from engine.errors import SkippableRecordError
from engine.model import (
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
_PHONE_KEY: Final = {kind: f"phone_{kind}" for kind in PHONE_KINDS}
_encoder: Final = msgspec.json.Encoder()


def utc(ts: datetime | None) -> datetime | None:
    """Aware UTC; a naive time from the API is taken as UTC."""
    if ts is None or ts.tzinfo is UTC:  # the common case: msgspec decodes ``Z`` as UTC
        return ts
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _fields(c: Contact) -> dict[str, str]:
    # The hot path of observation (100,000 calls per a full fetch). Lengths and enumerations
    # were checked by the decoder (schema.py), so this only maps; absent means empty.
    out: dict[str, str] = {}
    if v := c.first_name:
        out["first_name"] = v
    if v := c.last_name:
        out["last_name"] = v
    if v := c.job_title:
        out["job_title"] = v
    if v := c.company_name:
        out["company_name"] = v
    if c.birthday_month is not None:
        out["birthday_month"] = str(c.birthday_month)
    if c.birthday_day is not None:
        out["birthday_day"] = str(c.birthday_day)
    if v := c.anniversary:
        out["anniversary"] = v
    if c.phone_numbers:
        for phone in c.phone_numbers:
            if phone.phone_number:
                # Up to 3 phones; two of one kind cannot share a flat field: the first wins.
                out.setdefault(_PHONE_KEY[phone.kind or "other"], phone.phone_number)
    if c.street_addresses:
        seen: set[str] = set()
        for addr in c.street_addresses:
            kind = addr.kind or "home"
            if kind not in seen:
                seen.add(kind)
                for part in ADDRESS_PARTS:
                    if value := getattr(addr, part):
                        out[f"address_{kind}_{part}"] = value
    for cf in c.custom_fields:
        if cf.value:
            out[f"cf:{cf.custom_field_id}"] = cf.value
    return out


def _to_record(c: Contact, deleted: bool) -> ContactRecord:
    e = c.email_address
    if e is None or not e.address:
        raise SkippableRecordError(c.contact_id, "email_address.address", "missing")
    email = normalise_email(e.address)
    if not is_valid_email(email):
        raise SkippableRecordError(
            c.contact_id, "email_address.address", f"not an email address: {e.address!r}"
        )
    # msgspec decodes the API's "...Z" times as UTC already; utc() only for other offsets.
    updated, email_updated = c.updated_at, e.updated_at
    if updated is not None and updated.tzinfo is not UTC:
        updated = utc(updated)
    if email_updated is not None and email_updated.tzinfo is not UTC:
        email_updated = utc(email_updated)
    if updated is None or (email_updated is not None and email_updated > updated):
        updated = email_updated
    status = e.permission_to_send or "not_set"
    if status == "unsubscribed":
        permission = PermissionState(
            status=status,
            source=e.opt_out_source or e.opt_in_source,
            reason=e.opt_out_reason,
            changed_at=email_updated or utc(e.opt_out_date),
        )
    else:
        permission = PermissionState(
            status=status, source=e.opt_in_source, changed_at=email_updated
        )
    lists = c.list_memberships
    return ContactRecord(
        store_id=c.contact_id,
        email=email,
        fields=_fields(c),
        permission=permission,
        lists=tuple(sorted(set(lists))) if len(lists) > 1 else lists,
        deleted=deleted or bool(c.deleted_at),
        updated_at=updated,
    )


def normalise_contact(c: Contact, *, deleted: bool = False) -> ContactRecord | Rejected:
    """The engine's record for ``c``, or why it was rejected.

    ``deleted`` marks records from a ``status=deleted`` sweep even when the API omits
    ``deleted_at``.
    """
    try:
        return _to_record(c, deleted)
    except SkippableRecordError as exc:
        return Rejected(
            record=exc.record,
            field=exc.field,
            problem=exc.problem,
            raw=_encoder.encode(c).decode(),
        )


def normalise_list(lst: ContactList) -> ListRecord:
    """A contact list as the engine models it."""
    return ListRecord(
        store_id=lst.list_id,
        name=lst.name,
        description=lst.description or None,
        deleted=bool(lst.deleted_at),
        updated_at=utc(lst.updated_at),
    )
