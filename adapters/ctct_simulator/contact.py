"""One simulated contact, and its rendering as the API's ``ContactResource`` JSON.

A contact is a slotted mutable object (a million of them must fit in memory). Its encoded JSON
is cached (for the default include-set and for the latest other one) and dropped on every
change, so serving a page is mostly a join of cached bytes.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from adapters.ctct_simulator.clock import date_only, iso_ms
from adapters.ctct_simulator.timeindex import TimeIndex

__all__ = [
    "INCLUDES",
    "Contact",
    "Phone",
    "StreetAddress",
    "include_mask",
]

# include= names, each one bit of the cache key.
INCLUDES: Final[dict[str, int]] = {
    "custom_fields": 1,
    "list_memberships": 2,
    "phone_numbers": 4,
    "street_addresses": 8,
    "taggings": 16,
    "notes": 32,
}

_encode = msgspec.json.Encoder().encode
# Each include-set member when the contact has none of it: ``"taggings":[]``.
_EMPTY: Final[dict[int, bytes]] = {
    bit: b'"%s":[]' % name.encode() for name, bit in INCLUDES.items()
}


def include_mask(names: list[str]) -> int:
    """The cache key of an include list; raises KeyError on an unknown name."""
    mask = 0
    for name in names:
        mask |= INCLUDES[name]
    return mask


class Phone(msgspec.Struct, frozen=True, kw_only=True):
    """A phone number sub-resource."""

    phone_number_id: str
    phone_number: str
    kind: str
    created_at: int
    updated_at: int
    source: str

    def render(self) -> dict[str, Any]:
        """The API shape."""
        return {
            "phone_number_id": self.phone_number_id,
            "phone_number": self.phone_number,
            "kind": self.kind,
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at),
            "update_source": self.source,
            "create_source": self.source,
        }


class StreetAddress(msgspec.Struct, frozen=True, kw_only=True):
    """A street address sub-resource."""

    street_address_id: str
    kind: str
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    created_at: int = 0
    updated_at: int = 0

    def render(self) -> dict[str, Any]:
        """The API shape (absent parts left out, as the API does)."""
        out: dict[str, Any] = {"street_address_id": self.street_address_id, "kind": self.kind}
        for key in ("street", "city", "state", "postal_code", "country"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["created_at"] = iso_ms(self.created_at)
        out["updated_at"] = iso_ms(self.updated_at)
        return out


class Contact:
    """A contact's whole state. ``seq`` (creation order) never changes: cursors use it."""

    __slots__ = (
        "_bytes0",
        "_created_at",
        "_index",
        "_opt_out_date",
        "_updated_at",
        "addresses",
        "anniversary",
        "birthday_day",
        "birthday_month",
        "company_name",
        "confirm_status",
        "contact_id",
        "create_source",
        "custom_fields",
        "deleted_at",
        "email",
        "email_created_at",
        "email_updated_at",
        "first_name",
        "job_title",
        "last_name",
        "lists",
        "notes",
        "opt_in_date",
        "opt_in_source",
        "opt_out_reason",
        "opt_out_source",
        "permission",
        "phones",
        "seq",
        "taggings",
        "update_source",
    )

    def __init__(self, seq: int, contact_id: str, email: str, now: int, source: str) -> None:
        self.seq = seq
        self.contact_id = contact_id
        self.email = email
        self.permission = "implicit"
        self.email_created_at = now
        self.email_updated_at = now
        self.opt_in_source: str | None = source
        self.opt_in_date: int | None = now
        self.opt_out_source: str | None = None
        self._opt_out_date: int | None = None
        self.opt_out_reason: str | None = None
        self.confirm_status = "off"
        self.first_name: str | None = None
        self.last_name: str | None = None
        self.job_title: str | None = None
        self.company_name: str | None = None
        self.birthday_month: int | None = None
        self.birthday_day: int | None = None
        self.anniversary: str | None = None
        self.create_source = source
        self.update_source = source
        self._created_at = now
        self._updated_at = now
        self.deleted_at: int | None = None
        self.custom_fields: tuple[tuple[str, str], ...] = ()  # (custom_field_id, value)
        self.phones: tuple[Phone, ...] = ()
        self.addresses: tuple[StreetAddress, ...] = ()
        self.lists: tuple[str, ...] = ()  # list ids, in joining order
        self.taggings: tuple[str, ...] = ()
        self.notes: tuple[tuple[str, int, str], ...] = ()  # (note_id, created_at, content)
        self._bytes0: bytes | None = None
        self._index: TimeIndex | None = None  # set when the account registers the contact

    @property
    def deleted(self) -> bool:
        """Whether the contact is (soft) deleted."""
        return self.deleted_at is not None

    # The three indexed times are properties: assigning one moves the contact in the account's
    # time index (and drops the cached JSON) wherever the assignment is written, so no code
    # path can leave a time-filtered listing out of step with the contacts.
    @property
    def updated_at(self) -> int:
        """The contact's ``updated_at`` (profile, list and address changes move it)."""
        return self._updated_at

    @updated_at.setter
    def updated_at(self, ms: int) -> None:
        old, self._updated_at = self._updated_at, ms
        self.touch()
        if self._index is not None:
            self._index.move("updated", self.seq, old, ms)

    @property
    def created_at(self) -> int:
        """When the contact was created."""
        return self._created_at

    @created_at.setter
    def created_at(self, ms: int) -> None:
        old, self._created_at = self._created_at, ms
        self.touch()
        if self._index is not None:
            self._index.move("created", self.seq, old, ms)

    @property
    def opt_out_date(self) -> int | None:
        """When the contact last opted out (None if it never did or was opted in since)."""
        return self._opt_out_date

    @opt_out_date.setter
    def opt_out_date(self, ms: int | None) -> None:
        old, self._opt_out_date = self._opt_out_date, ms
        self.touch()
        if self._index is not None:
            self._index.move("optout", self.seq, old, ms)

    def attach(self, index: TimeIndex, *, insert: bool = True) -> None:
        """Enter ``index`` (once, when the account registers the contact); ``insert=False``
        when the index was built with this contact's times already."""
        self._index = index
        if not insert:
            return
        index.insert("updated", self._updated_at, self.seq)
        index.insert("created", self._created_at, self.seq)
        index.insert("optout", self._opt_out_date, self.seq)

    def touch(self) -> None:
        """Drop the cached JSON: call after every change."""
        self._bytes0 = None

    def encoded(self, mask: int) -> bytes:
        """The contact's JSON for an include-set, the default JSON from the cache.

        The include-set's members are the object's last keys, so its JSON is the default
        JSON without its closing brace, then the members: only the members are rendered for
        an include-set. They are not cached: at a million contacts a cache of them held
        ~390 MB and took the simulator past its 2 GB bound.
        """
        base = self._bytes0
        if base is None:
            base = self._bytes0 = _encode(self._render_core())
        if mask == 0:
            return base
        return base[:-1] + self._encode_includes(mask)

    def cache_is_current(self) -> bool:
        """Whether the cached JSON is what the contact renders now (a test's check that every
        change went through ``touch``)."""
        return self._bytes0 is None or self._bytes0 == _encode(self._render_core())

    def _encode_includes(self, mask: int) -> bytes:
        """``,"custom_fields":[...],...}``: the include-set's members and the closing brace,
        with empty members (most of them) as constants rather than rendered."""
        parts: list[bytes] = []
        if mask & 1:
            parts.append(
                _encode(self._render_includes(1))[1:-1] if self.custom_fields else _EMPTY[1]
            )
        if mask & 2:
            parts.append(b'"list_memberships":' + _encode(self.lists) if self.lists else _EMPTY[2])
        if mask & 4:
            parts.append(_encode(self._render_includes(4))[1:-1] if self.phones else _EMPTY[4])
        if mask & 8:
            parts.append(_encode(self._render_includes(8))[1:-1] if self.addresses else _EMPTY[8])
        if mask & 16:
            parts.append(b'"taggings":' + _encode(self.taggings) if self.taggings else _EMPTY[16])
        if mask & 32:
            parts.append(_encode(self._render_includes(32))[1:-1] if self.notes else _EMPTY[32])
        return b"," + b",".join(parts) + b"}" if parts else b"}"

    def render_email(self, known: dict[int, str] | None = None) -> dict[str, Any]:
        """The ``EmailAddress`` object (``known``: timestamps already rendered, by value)."""
        known = {} if known is None else known

        def ts(ms: int) -> str:
            text = known.get(ms)
            if text is None:
                text = known[ms] = iso_ms(ms)
            return text

        em: dict[str, Any] = {
            "address": self.email,
            "permission_to_send": self.permission,
            "created_at": ts(self.email_created_at),
            "updated_at": ts(self.email_updated_at),
        }
        if self.opt_in_source is not None:
            em["opt_in_source"] = self.opt_in_source
        if self.opt_in_date is not None:
            em["opt_in_date"] = ts(self.opt_in_date)
        if self.permission == "unsubscribed":
            if self.opt_out_source is not None:
                em["opt_out_source"] = self.opt_out_source
            if self.opt_out_date is not None:
                em["opt_out_date"] = ts(self.opt_out_date)
            if self.opt_out_reason:
                em["opt_out_reason"] = self.opt_out_reason
        em["confirm_status"] = self.confirm_status
        return em

    def render(self, mask: int) -> dict[str, Any]:
        """The ``ContactResource`` JSON object; null core fields are left out, as the API does."""
        out = self._render_core()
        out.update(self._render_includes(mask))
        return out

    def _render_core(self) -> dict[str, Any]:
        """The object without include-set members (they come last: see ``encoded``)."""
        # Most of a contact's five timestamps share one or two values: render each value once.
        created = iso_ms(self.created_at)
        updated = created if self.updated_at == self.created_at else iso_ms(self.updated_at)
        known = {self.created_at: created, self.updated_at: updated}
        out: dict[str, Any] = {
            "contact_id": self.contact_id,
            "email_address": self.render_email(known),
        }
        for key in ("first_name", "last_name", "job_title", "company_name"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.birthday_month is not None:
            out["birthday_month"] = self.birthday_month
        if self.birthday_day is not None:
            out["birthday_day"] = self.birthday_day
        if self.anniversary is not None:
            out["anniversary"] = self.anniversary
        out["update_source"] = self.update_source
        out["create_source"] = self.create_source
        out["created_at"] = created
        out["updated_at"] = updated
        if self.deleted_at is not None:
            out["deleted_at"] = date_only(self.deleted_at)
        return out

    def _render_includes(self, mask: int) -> dict[str, Any]:
        """The include-set's members, in the API's order."""
        out: dict[str, Any] = {}
        if mask & 1:
            out["custom_fields"] = [
                {"custom_field_id": cid, "value": value} for cid, value in self.custom_fields
            ]
        if mask & 2:
            out["list_memberships"] = self.lists
        if mask & 4:
            out["phone_numbers"] = [p.render() for p in self.phones]
        if mask & 8:
            out["street_addresses"] = [a.render() for a in self.addresses]
        if mask & 16:
            out["taggings"] = self.taggings
        if mask & 32:
            out["notes"] = [
                {"note_id": nid, "created_at": iso_ms(at), "content": text}
                for nid, at, text in sorted(self.notes, key=lambda n: -n[1])
            ]
        return out
