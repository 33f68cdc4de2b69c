"""Constant Contact's ContactResource -> the engine's ContactRecord, or a Rejected record.

A record is rejected (never the page) for an invalid email, an unknown enumeration value or a
field longer than the API allows; the rejection names the contact_id and the field. Lengths and
enumerations are enforced by the decoder (schema.Contact, in C); what is left here is mapping
and the email rule, on the hot path of every observation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import msgspec

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
    "ContactNormaliser",
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
    return _to_utc(ts)


def _to_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


_ADDRESS_KEYS: Final = {
    kind: tuple((part, f"address_{kind}_{part}") for part in ADDRESS_PARTS)
    for kind in ADDRESS_KINDS
}


class _Shared:
    """Values shared across the records of one observation pass.

    A custom field's key and a sorted membership tuple are built once per distinct value,
    not once per contact (100,000 per full fetch, a few distinct values), and records share
    them. Bounded, so an account with very many lists cannot grow them without limit.
    """

    MAX: Final = 4096

    def __init__(self) -> None:
        self.cf_keys: dict[str, str] = {}
        self.lists: dict[tuple[str, ...], tuple[str, ...]] = {}

    def sorted_lists(self, lists: tuple[str, ...]) -> tuple[str, ...]:
        """Sorted, without repeats."""
        out = self.lists.get(lists)
        if out is None:
            if len(self.lists) >= self.MAX:
                self.lists.clear()
            out = self.lists[lists] = tuple(sorted(set(lists)))
        return out

    def extras(self, c: Contact, out: dict[str, str]) -> None:
        """Phones, addresses and custom fields into ``out`` (called only when there are any)."""
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
                    for part, key in _ADDRESS_KEYS[kind]:
                        if value := getattr(addr, part):
                            out[key] = value
        keys = self.cf_keys
        for cf in c.custom_fields:
            if cf.value:
                cf_key = keys.get(cf.custom_field_id)
                if cf_key is None:
                    if len(keys) >= self.MAX:
                        keys.clear()
                    cf_key = keys[cf.custom_field_id] = f"cf:{cf.custom_field_id}"
                out[cf_key] = cf.value


def _rejected(c: Contact, problem: str) -> Rejected:
    return Rejected(
        record=c.contact_id,
        field="email_address.address",
        problem=problem,
        raw=_encoder.encode(c).decode(),
    )


class ContactNormaliser:
    """Normalises the pages of one observation pass (sharing keys and list tuples)."""

    def __init__(self) -> None:
        self._shared = _Shared()

    def page(
        self, contacts: Iterable[Contact], *, deleted: bool = False
    ) -> tuple[list[ContactRecord], list[Rejected]]:
        """The engine's records for one page of ``contacts``, and those rejected (with why).

        ``deleted`` marks records from a ``status=deleted`` sweep even when the API omits
        ``deleted_at``. The hot path of observation (100,000 contacts per full fetch): one loop
        per page, names bound locally, lengths and enumerations already checked by the decoder
        (schema.py), sub-resources looked at only when present.
        """
        records: list[ContactRecord] = []
        rejected: list[Rejected] = []
        keep = records.append
        record, permission_state = ContactRecord, PermissionState
        normalise, valid, to_utc = normalise_email, is_valid_email, _to_utc
        shared = self._shared
        sort = shared.sorted_lists
        for c in contacts:
            e = c.email_address
            if e is None or not e.address:
                rejected.append(_rejected(c, "missing"))
                continue
            email = normalise(e.address)
            if not valid(email):
                rejected.append(_rejected(c, f"not an email address: {e.address!r}"))
                continue
            # msgspec decodes the API's "...Z" times as UTC already; utc() only for other offsets.
            updated, email_updated = c.updated_at, e.updated_at
            if updated is not None and updated.tzinfo is not UTC:
                updated = to_utc(updated)
            if email_updated is not None:
                if email_updated.tzinfo is not UTC:
                    email_updated = to_utc(email_updated)
                if updated is None or email_updated > updated:
                    updated = email_updated  # an unsubscribe moves only the email's time
            status = e.permission_to_send or "not_set"
            if status == "unsubscribed":
                permission = permission_state(
                    status=status,
                    source=e.opt_out_source or e.opt_in_source,
                    reason=e.opt_out_reason,
                    changed_at=email_updated or utc(e.opt_out_date),
                )
            else:
                permission = permission_state(
                    status=status, source=e.opt_in_source, changed_at=email_updated
                )
            fields: dict[str, str] = {}
            if v := c.first_name:
                fields["first_name"] = v
            if v := c.last_name:
                fields["last_name"] = v
            if v := c.job_title:
                fields["job_title"] = v
            if v := c.company_name:
                fields["company_name"] = v
            if c.birthday_month is not None:
                fields["birthday_month"] = str(c.birthday_month)
            if c.birthday_day is not None:
                fields["birthday_day"] = str(c.birthday_day)
            if v := c.anniversary:
                fields["anniversary"] = v
            if c.phone_numbers or c.street_addresses or c.custom_fields:
                shared.extras(c, fields)
            lists = c.list_memberships
            keep(
                record(
                    store_id=c.contact_id,
                    email=email,
                    fields=fields,
                    permission=permission,
                    lists=sort(lists) if len(lists) > 1 else lists,
                    deleted=deleted or bool(c.deleted_at),
                    updated_at=updated,
                )
            )
        return records, rejected


def normalise_contact(c: Contact, *, deleted: bool = False) -> ContactRecord | Rejected:
    """The engine's record for one contact, or why it was rejected (see ContactNormaliser.page)."""
    records, rejected = ContactNormaliser().page((c,), deleted=deleted)
    return records[0] if records else rejected[0]


def normalise_list(lst: ContactList) -> ListRecord:
    """A contact list as the engine models it."""
    return ListRecord(
        store_id=lst.list_id,
        name=lst.name,
        description=lst.description or None,
        deleted=bool(lst.deleted_at),
        updated_at=utc(lst.updated_at),
    )
