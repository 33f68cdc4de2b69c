"""The API's write rules for single contacts: POST, PUT and the sign-up form.

* POST creates only: 409 for an address the account knows in any state, deleted included.
* PUT overwrites core fields (left out means null), keeps sub-resources left out, replaces
  those sent, and revives a deleted contact (``update_source`` must be ``Account`` for that).
* sign_up_form upserts by address, appends lists, and sets an existing contact ``explicit``.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Final

from msgspec import UNSET

from adapters.ctct_simulator.account import CORE_FIELDS, Account
from adapters.ctct_simulator.bodies import (
    AddressIn,
    ContactPostIn,
    ContactPutIn,
    CustomFieldIn,
    PhoneIn,
    SignUpIn,
    _ContactIn,
)
from adapters.ctct_simulator.contact import Contact, Phone, StreetAddress
from adapters.ctct_simulator.errors import Invalid

__all__ = ["apply_put", "create_contact", "sign_up", "valid_email"]

PERMISSIONS: Final = frozenset(
    ("explicit", "implicit", "not_set", "pending_confirmation", "temp_hold", "unsubscribed")
)
PHONE_KINDS: Final = frozenset(("home", "work", "mobile", "other"))
ADDRESS_KINDS: Final = frozenset(("home", "work", "other"))
SOURCES: Final = frozenset(("Contact", "Account"))
_EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ANNIVERSARY: Final = (
    re.compile(r"^(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})$"),
    re.compile(r"^(?P<y>\d{4})[/-](?P<m>\d{1,2})[/-](?P<d>\d{1,2})$"),
    re.compile(r"^(?P<m>\d{1,2})-(?P<d>\d{1,2})-(?P<y>\d{4})$"),
)


def valid_email(address: str) -> bool:
    """Whether the account would accept this address."""
    return _EMAIL_RE.match(address) is not None


def _email(address: str, field: str) -> str:
    address = address.strip()
    if not valid_email(address):
        raise Invalid(f"{field}: {address!r} is not a valid email address.")
    return address


def normalise_anniversary(text: str | None, field: str = "anniversary") -> str | None:
    """The accepted input formats, rendered ``YYYY-MM-DD``; Invalid otherwise."""
    if text is None or text == "":
        return None
    for pattern in _ANNIVERSARY:
        m = pattern.match(text.strip())
        if m:
            try:
                return date(int(m["y"]), int(m["m"]), int(m["d"])).isoformat()
            except ValueError:
                break
    raise Invalid(f"{field}: {text!r} is not a valid date (e.g. 2006-11-15 or 11/15/2006).")


def _check_refs(account: Account, body: _ContactIn) -> None:
    if body.list_memberships is not UNSET:
        account.check_lists(body.list_memberships, "list_memberships")
    if body.custom_fields is not UNSET:
        _check_custom_fields(account, body.custom_fields, "custom_fields")
    if body.phone_numbers is not UNSET:
        for i, p in enumerate(body.phone_numbers):
            if p.kind not in PHONE_KINDS:
                raise Invalid(
                    f"phone_numbers[{i}].kind: {p.kind!r} is not one of {sorted(PHONE_KINDS)}"
                )
    if body.street_addresses is not UNSET:
        for i, a in enumerate(body.street_addresses):
            if a.kind not in ADDRESS_KINDS:
                raise Invalid(
                    f"street_addresses[{i}].kind: {a.kind!r} is not one of {sorted(ADDRESS_KINDS)}"
                )


def _check_custom_fields(account: Account, fields: list[CustomFieldIn], name: str) -> None:
    known = set(account.custom_fields.values())
    for i, f in enumerate(fields):
        if f.custom_field_id not in known:
            raise Invalid(f"{name}[{i}].custom_field_id: {f.custom_field_id} does not exist.")


def _phones(
    account: Account, old: tuple[Phone, ...], new: list[PhoneIn], source: str
) -> tuple[Phone, ...]:
    now = account.stamp()
    kept = {(p.phone_number, p.kind): p for p in old}
    out = []
    for p in new:
        prior = kept.get((p.phone_number, p.kind))
        out.append(
            prior
            or Phone(
                phone_number_id=account.new_id(),
                phone_number=p.phone_number,
                kind=p.kind,
                created_at=now,
                updated_at=now,
                source=source,
            )
        )
    return tuple(out)


def _addresses(
    account: Account, old: tuple[StreetAddress, ...], new: list[AddressIn]
) -> tuple[StreetAddress, ...]:
    now = account.stamp()
    out = []
    for a in new:
        parts = (a.kind, a.street, a.city, a.state, a.postal_code, a.country)
        prior = next(
            (
                o
                for o in old
                if (o.kind, o.street, o.city, o.state, o.postal_code, o.country) == parts
            ),
            None,
        )
        out.append(
            prior
            or StreetAddress(
                street_address_id=account.new_id(),
                kind=a.kind,
                street=a.street,
                city=a.city,
                state=a.state,
                postal_code=a.postal_code,
                country=a.country,
                created_at=now,
                updated_at=now,
            )
        )
    return tuple(out)


def _apply_subresources(account: Account, c: Contact, body: _ContactIn, source: str) -> bool:
    """Replace the sub-resources the body sends; returns whether anything changed."""
    changed = False
    if body.custom_fields is not UNSET:
        new_cf = tuple((f.custom_field_id, f.value) for f in body.custom_fields)
        changed |= new_cf != c.custom_fields
        c.custom_fields = new_cf
    if body.phone_numbers is not UNSET:
        phones = _phones(account, c.phones, body.phone_numbers, source)
        changed |= phones != c.phones
        c.phones = phones
    if body.street_addresses is not UNSET:
        addresses = _addresses(account, c.addresses, body.street_addresses)
        changed |= addresses != c.addresses
        c.addresses = addresses
    if body.list_memberships is not UNSET:
        lists = tuple(dict.fromkeys(body.list_memberships))
        changed |= lists != c.lists
        c.lists = lists
    if body.taggings is not UNSET:
        tags = tuple(dict.fromkeys(body.taggings))
        changed |= tags != c.taggings
        c.taggings = tags
    if body.notes is not UNSET:
        now = account.stamp()
        notes = tuple((n.note_id or account.new_id(), now, n.content) for n in body.notes)
        changed |= [n[2] for n in notes] != [n[2] for n in c.notes]
        c.notes = notes
    return changed


def apply_put(account: Account, c: Contact, body: ContactPutIn) -> None:
    """PUT /contacts/{id}: the full-replace-of-core-fields rule (see the module docstring)."""
    source = body.update_source
    if source not in SOURCES:
        raise Invalid(f"update_source: {source!r} is not one of Contact, Account")
    if c.deleted and source != "Account":
        raise Invalid("update_source: must be Account to revive a deleted contact")
    if body.email_address is None:
        raise Invalid("email_address: is required")
    address = _email(body.email_address.address, "email_address.address")
    perm = body.email_address.permission_to_send
    if perm is not None and perm not in PERMISSIONS:
        raise Invalid(
            f"email_address.permission_to_send: {perm!r} is not one of {sorted(PERMISSIONS)}"
        )
    if (
        perm is not None
        and perm != "unsubscribed"
        and c.permission == "unsubscribed"
        and c.opt_out_source == "Contact"
    ):
        raise Invalid(
            "email_address.permission_to_send: the contact unsubscribed themselves; only "
            "their own confirmation can re-subscribe them (PUT /contacts/resubscribe/{id})"
        )
    anniversary = normalise_anniversary(body.anniversary)
    _check_refs(account, body)
    changed = False
    if address != c.email:
        account.change_email(c, address)
        changed = True
    values = {f: getattr(body, f) for f in CORE_FIELDS}
    values["anniversary"] = anniversary
    for name, value in values.items():
        if getattr(c, name) != value:
            setattr(c, name, value)
            changed = True
    changed |= _apply_subresources(account, c, body, source)
    if perm == "unsubscribed":
        account.opt_out(c, reason=body.email_address.opt_out_reason, source=source)
    elif perm is not None and perm != c.permission:
        account.set_permission(c, perm, source=source)
    if c.deleted:
        account.revive(c, source)
    elif changed:
        account.commit(c, source)


def create_contact(account: Account, body: ContactPostIn) -> Contact:
    """POST /contacts: create only; 409 for any known address."""
    if body.email_address is None:
        raise Invalid("email_address: is required")
    address = _email(body.email_address.address, "email_address.address")
    source = body.create_source
    if source not in SOURCES:
        raise Invalid(f"create_source: {source!r} is not one of Contact, Account (it is required)")
    perm = body.email_address.permission_to_send or "implicit"
    if perm not in PERMISSIONS:
        raise Invalid(
            f"email_address.permission_to_send: {perm!r} is not one of {sorted(PERMISSIONS)}"
        )
    anniversary = normalise_anniversary(body.anniversary)
    _check_refs(account, body)
    c = account.add_contact(address, source=source, permission=perm)
    for name in CORE_FIELDS:
        setattr(c, name, getattr(body, name))
    c.anniversary = anniversary
    _apply_subresources(account, c, body, source)
    c.touch()
    return c


def sign_up(account: Account, body: SignUpIn, *, confirmed_opt_in: bool) -> tuple[Contact, bool]:
    """POST /contacts/sign_up_form; returns (contact, created)."""
    if body.email_address is None:
        raise Invalid("email_address: is required (the simulator has no SMS channel)")
    address = _email(body.email_address, "email_address")
    account.check_lists(body.list_memberships, "list_memberships")
    if body.custom_fields:
        _check_custom_fields(account, body.custom_fields, "custom_fields")
    anniversary = normalise_anniversary(body.anniversary)
    c = account.find_email(address)
    created = c is None
    if c is None:
        perm = "pending_confirmation" if confirmed_opt_in else "explicit"
        c = account.add_contact(address, source="Contact", permission=perm)
    for name in (
        "first_name",
        "last_name",
        "job_title",
        "company_name",
        "birthday_month",
        "birthday_day",
    ):
        value = getattr(body, name)
        if value is not None:
            setattr(c, name, value)
    if anniversary is not None:
        c.anniversary = anniversary
    if body.phone_number:
        c.phones = _phones(account, c.phones, [PhoneIn(phone_number=body.phone_number)], "Contact")
    if body.street_address is not None:
        a = body.street_address
        c.addresses = _addresses(
            account,
            c.addresses,
            [
                AddressIn(
                    kind=a.kind,
                    street=a.street,
                    city=a.city,
                    state=a.state,
                    postal_code=a.postal_code,
                    country=a.country,
                )
            ],
        )
    if body.custom_fields:
        merged = dict(c.custom_fields)
        merged.update((f.custom_field_id, f.value) for f in body.custom_fields)
        c.custom_fields = tuple(merged.items())[:25]
    lists = tuple(dict.fromkeys((*c.lists, *body.list_memberships)))
    if len(lists) > 50:
        raise Invalid("list_memberships: a contact can be on at most 50 lists")
    c.lists = lists
    if not created:
        # The pitfall: the sign-up form (re)subscribes an existing contact as explicit.
        account.set_permission(c, "explicit", source="Contact")
        account.revive(c, "Contact")
    account.commit(c, "Contact")
    return c, created
