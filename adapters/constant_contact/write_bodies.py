"""Request bodies for writes, built from engine fields: pure functions, tested without HTTP.

* ``import_row``: one contacts_json_import row holding the email and *only* the given fields
  (imports leave everything else, permission included, untouched: pitfall 6).
* ``import_batches``: rows cut into activities of at most 40,000 contacts and under 4 MB, since
  the API silently drops what is past 4 MB.
* ``put_body``: a PUT /contacts/{id} body carrying every current core field (PUT nulls any core
  field left out: pitfall 8) plus the sub-resources as they are, with the requested changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import msgspec

from engine.errors import SkippableRecordError

from .normalise import ADDRESS_KINDS, ADDRESS_PARTS, CORE_FIELDS, PHONE_KINDS
from .schema import Contact

__all__ = [
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_ROWS",
    "ImportRow",
    "import_batches",
    "import_row",
    "put_body",
]

MAX_IMPORT_ROWS: Final = 40_000
MAX_IMPORT_BYTES: Final = 4 * 1024 * 1024 - 64 * 1024  # under 4 MB with room for the envelope
MAX_IMPORT_EMAIL: Final = 50  # JsonImportContact.email maxLength (the contact allows 80)
_IMPORT_PART: Final = {
    "street": "street",
    "city": "city",
    "state": "state",
    "postal_code": "zip",
    "country": "country",
}
_enc: Final = msgspec.json.Encoder()

ImportRow = dict[str, str | int]


def _import_key(field: str, cf_names: Mapping[str, str]) -> str:
    if field in CORE_FIELDS or field == "anniversary":
        return field
    if field in ("birthday_month", "birthday_day"):
        return field
    if field.startswith("phone_") and field[6:] in PHONE_KINDS:
        return f"{field[6:]}_phone"
    if field.startswith("address_"):
        kind, _, part = field[8:].partition("_")
        if kind in ADDRESS_KINDS and part in ADDRESS_PARTS:
            return f"{kind}_{_IMPORT_PART[part]}"
    if field.startswith("cf:"):
        key = field[3:]
        # Imports name custom fields by name; observed records carry their id.
        return f"cf:{cf_names.get(key, key)}"
    raise ValueError(field)


def import_row(
    record: str, email: str, fields: Mapping[str, str | None], cf_names: Mapping[str, str]
) -> ImportRow:
    """The import row for one contact; SkippableRecordError names a field imports cannot take."""
    if len(email) > MAX_IMPORT_EMAIL:
        raise SkippableRecordError(
            record, "email", f"{len(email)} characters, imports take at most {MAX_IMPORT_EMAIL}"
        )
    row: ImportRow = {"email": email}
    for field, value in sorted(fields.items()):
        if value is None:
            continue  # imports cannot clear a field; callers route clears through PUT
        try:
            key = _import_key(field, cf_names)
        except ValueError:
            raise SkippableRecordError(record, field, "not a Constant Contact field") from None
        if field in ("birthday_month", "birthday_day"):
            try:
                row[key] = int(value)
            except ValueError:
                raise SkippableRecordError(record, field, f"not a number: {value!r}") from None
        else:
            row[key] = value
    return row


def import_batches(rows: Iterable[tuple[int, bytes]]) -> Iterator[list[int]]:
    """Group (index, encoded row) into batches under both import limits; yields the indexes."""
    batch: list[int] = []
    size = 0
    for index, encoded in rows:
        if batch and (len(batch) >= MAX_IMPORT_ROWS or size + len(encoded) + 1 > MAX_IMPORT_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(index)
        size += len(encoded) + 1
    if batch:
        yield batch


def encode_row(row: ImportRow) -> bytes:
    return _enc.encode(row)


def put_body(
    current: Contact,
    *,
    update_source: str,
    changes: Mapping[str, str | None] | None = None,
    new_email: str | None = None,
    permission_to_send: str | None = None,
    opt_out_reason: str | None = None,
) -> dict[str, Any]:
    """A complete PUT body from the current contact (read with every include) and changes."""
    changes = changes or {}
    record = current.contact_id
    email = current.email_address
    if email is None:
        raise SkippableRecordError(record, "email_address", "the contact has no email address")
    address: dict[str, Any] = {"address": new_email or email.address}
    # Permission is sent only to unsubscribe. Echoing the value read by the GET could undo an
    # opt-out made between our GET and PUT (a re-subscription): leaving it out changes nothing.
    if permission_to_send is not None:
        address["permission_to_send"] = permission_to_send
    reason = opt_out_reason if opt_out_reason is not None else email.opt_out_reason
    if reason:
        address["opt_out_reason"] = reason[:255]
    body: dict[str, Any] = {"email_address": address, "update_source": update_source}
    core: dict[str, Any] = {
        "first_name": current.first_name,
        "last_name": current.last_name,
        "job_title": current.job_title,
        "company_name": current.company_name,
        "birthday_month": current.birthday_month,
        "birthday_day": current.birthday_day,
        "anniversary": current.anniversary,
    }
    for field in (*CORE_FIELDS, "anniversary", "birthday_month", "birthday_day"):
        if field in changes:
            value = changes[field]
            if value is not None and field.startswith("birthday_"):
                try:
                    core[field] = int(value)
                except ValueError:
                    raise SkippableRecordError(record, field, f"not a number: {value!r}") from None
            else:
                core[field] = value
    body.update({k: v for k, v in core.items() if v is not None})
    phones: dict[str, str] = {}
    for p in current.phone_numbers:
        if p.phone_number:
            phones.setdefault(p.kind or "other", p.phone_number)
    addrs: dict[str, dict[str, str]] = {}
    for a in current.street_addresses:
        parts = {p: getattr(a, p) for p in ADDRESS_PARTS if getattr(a, p)}
        addrs.setdefault(a.kind or "home", parts)
    cfs = {f.custom_field_id: f.value for f in current.custom_fields if f.value}
    for field, value in changes.items():
        if field.startswith("phone_") and field[6:] in PHONE_KINDS:
            _set(phones, field[6:], value)
        elif field.startswith("address_"):
            kind, _, part = field[8:].partition("_")
            if kind in ADDRESS_KINDS and part in ADDRESS_PARTS:
                _set(addrs.setdefault(kind, {}), part, value)
        elif field.startswith("cf:"):
            _set(cfs, field[3:], value)
    # Sub-resources the API keeps when omitted; sent whole so the result is exactly this set.
    body["phone_numbers"] = [{"phone_number": n, "kind": k} for k, n in phones.items() if n]
    body["street_addresses"] = [{"kind": k, **parts} for k, parts in addrs.items() if parts]
    body["custom_fields"] = [{"custom_field_id": i, "value": v} for i, v in cfs.items() if v]
    return body


def _set(target: dict[str, Any], key: str, value: str | None) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value
