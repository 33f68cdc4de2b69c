"""One row of a JSON import (``JsonImportContact``), applied the way Constant Contact does.

Existing contacts (matched by address, deleted ones included and revived) keep their
permission; only the properties supplied change. Unsubscribed contacts are not added to the
lists. New contacts are ``implicit`` with ``opt_in_source`` Account.
"""

from __future__ import annotations

from typing import Final, Literal

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.contact import Contact, Phone, StreetAddress
from adapters.ctct_simulator.errors import ApiError
from adapters.ctct_simulator.writes import normalise_anniversary, valid_email

__all__ = ["RowOutcome", "import_row"]

RowOutcome = Literal["added", "updated", "cannot_add_to_list"]

_TEXT: Final = {"first_name": 50, "last_name": 50, "job_title": 50, "company_name": 50}
_PHONES: Final = {
    "phone": "other",
    "home_phone": "home",
    "work_phone": "work",
    "mobile_phone": "mobile",
    "other_phone": "other",
}
_ADDRESS_PARTS: Final = ("street", "street2", "city", "state", "zip", "country")
_ADDRESS_KEYS: Final = {
    **{part: ("home", part) for part in _ADDRESS_PARTS},
    **{
        f"{kind}_{part}": (kind, part)
        for kind in ("home", "work", "other")
        for part in _ADDRESS_PARTS
    },
    "home country": ("home", "country"),  # sic: the spec has this key with a space
}
_OTHER: Final = frozenset(
    ("email", "birthday_month", "birthday_day", "anniversary", "sms_number", "sms_consent_date")
)


class RowError(Exception):
    """A row that cannot be imported: the message names the row and the field."""


def _text(row: dict[str, object], key: str, limit: int, n: int) -> str:
    value = row[key]
    if not isinstance(value, str | int | float):
        raise RowError(f"row {n}: {key}: expected a string")
    text = str(value)
    if len(text) > limit:
        raise RowError(f"row {n}: {key}: longer than {limit} characters")
    return text


def import_row(account: Account, row: dict[str, object], list_ids: list[str], n: int) -> RowOutcome:
    """Apply row ``n``; raises RowError naming the row and field when it is invalid."""
    for key in row:
        if (
            key not in _TEXT
            and key not in _PHONES
            and key not in _ADDRESS_KEYS
            and key not in _OTHER
            and not key.startswith("cf:")
        ):
            raise RowError(f"row {n}: {key}: not a JSON import field")
    if "email" not in row:
        raise RowError(f"row {n}: email: required (SMS-only contacts are not simulated)")
    email = _text(row, "email", 50, n).strip()
    if not valid_email(email):
        raise RowError(f"row {n}: email: {email!r} is not a valid email address")
    core: dict[str, object] = {k: _text(row, k, lim, n) for k, lim in _TEXT.items() if k in row}
    for key, top in (("birthday_month", 12), ("birthday_day", 31)):
        if key in row:
            value = row[key]
            if (
                not isinstance(value, int | str)
                or not str(value).isdigit()
                or not 1 <= int(value) <= top
            ):
                raise RowError(f"row {n}: {key}: {value!r} is not between 1 and {top}")
            core[key] = int(value)
    if "anniversary" in row:
        try:
            core["anniversary"] = normalise_anniversary(_text(row, "anniversary", 10, n))
        except ApiError as exc:
            raise RowError(f"row {n}: {exc.message}") from None
    custom: dict[str, str] = {}
    for key in row:
        if key.startswith("cf:"):
            field_id = account.custom_fields.get(key[3:])
            if field_id is None:
                raise RowError(f"row {n}: {key}: no such custom field in the account")
            custom[field_id] = _text(row, key, 255, n)
    phones = {kind: _text(row, key, 50, n) for key, kind in _PHONES.items() if key in row}
    addresses: dict[str, dict[str, str]] = {}
    for key, (kind, part) in _ADDRESS_KEYS.items():
        if key in row:
            addresses.setdefault(kind, {})[part] = _text(
                row, key, 255 if "street" in part else 50, n
            )

    c = account.find_email(email)
    # checked before anything changes, so a refused row leaves the contact as it was
    if c is not None and c.permission != "unsubscribed" and len(set(c.lists) | set(list_ids)) > 50:
        raise RowError(f"row {n}: list_ids: the contact would be on more than 50 lists")
    if custom and c is not None and len(dict(c.custom_fields) | custom) > 25:
        raise RowError(f"row {n}: cf:*: a contact can have at most 25 custom fields")
    created = c is None
    if c is None:
        c = account.add_contact(email, source="Account", permission="implicit")
    elif c.deleted:
        account.revive(c, "Account")
    before = _content(c)
    for key, value in core.items():
        setattr(c, key, value)
    if custom:
        c.custom_fields = tuple((dict(c.custom_fields) | custom).items())
    now = account.stamp()
    if phones:
        current = {p.kind: p for p in c.phones}
        new = [
            current[kind]
            if kind in current and current[kind].phone_number == num[:25]
            else Phone(
                phone_number_id=account.new_id(),
                phone_number=num[:25],
                kind=kind,
                created_at=now,
                updated_at=now,
                source="Account",
            )
            for kind, num in phones.items()
        ]
        c.phones = tuple(([p for p in c.phones if p.kind not in phones] + new)[:3])
    if addresses:
        current_a = {a.kind: a for a in c.addresses}
        new_a = []
        for kind, parts in addresses.items():
            street = " ".join(p for p in (parts.get("street"), parts.get("street2")) if p) or None
            values = (street, parts.get("city"), parts.get("state"), parts.get("zip"),
                      parts.get("country"))  # fmt: skip
            prior = current_a.get(kind)
            if (
                prior is not None
                and (prior.street, prior.city, prior.state, prior.postal_code, prior.country)
                == values
            ):
                new_a.append(prior)
                continue
            new_a.append(StreetAddress(
                street_address_id=account.new_id(), kind=kind, street=values[0], city=values[1],
                state=values[2], postal_code=values[3], country=values[4], created_at=now,
                updated_at=now,
            ))  # fmt: skip
        c.addresses = tuple(([a for a in c.addresses if a.kind not in addresses] + new_a)[:3])
    outcome: RowOutcome = "added" if created else "updated"
    if c.permission == "unsubscribed":
        outcome = "cannot_add_to_list"  # imports never re-subscribe, nor add to lists
    else:
        c.lists = tuple(dict.fromkeys((*c.lists, *list_ids)))
    if created or _content(c) != before:
        account.commit(c, "Account")  # an import that changes nothing leaves updated_at alone
    return outcome


def _content(c: Contact) -> tuple[object, ...]:
    """What an import can change (sub-resource objects compare by value)."""
    return (
        c.first_name, c.last_name, c.job_title, c.company_name, c.birthday_month,
        c.birthday_day, c.anniversary, c.custom_fields, c.phones, c.addresses, c.lists,
    )  # fmt: skip
