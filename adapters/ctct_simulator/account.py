"""The simulated account's state and the changes made to it.

Every change goes through here, so the two-timestamps rule lives in one place: profile, list
and address changes move the contact's ``updated_at``; permission changes move only
``email_address.updated_at`` (and ``opt_out_date``). That is Constant Contact's behaviour and
the reason ``updated_after`` alone misses unsubscribes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from adapters.ctct_simulator.clock import SimClock
from adapters.ctct_simulator.contact import Contact
from adapters.ctct_simulator.errors import Conflict, Invalid, NotFound
from adapters.ctct_simulator.records import ContactList, CustomFieldDef, field_name
from adapters.ctct_simulator.timeindex import TimeIndex, make_key

if TYPE_CHECKING:
    from adapters.ctct_simulator.tracking import Campaign

__all__ = [
    "CORE_FIELDS",
    "MAX_CUSTOM_FIELDS",
    "MAX_LISTS_PER_CONTACT",
    "Account",
    "normalise",
]

MAX_LISTS_PER_CONTACT: Final = 50
MAX_CUSTOM_FIELDS: Final = 25
CORE_FIELDS: Final = (
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "birthday_month",
    "birthday_day",
    "anniversary",
)
_SOURCES: Final = ("Contact", "Account")


def normalise(address: str) -> str:
    """The account's uniqueness key for an address."""
    return address.strip().casefold()


class Account:
    """Contacts (in creation order), lists and custom fields of one account.

    Contacts are never removed from ``contacts``: a delete is soft, so a contact's position
    (its ``seq``) is stable and cursor paging never skips one.
    """

    def __init__(self, clock: SimClock, seed: int) -> None:
        self.clock = clock
        self._rng = random.Random(f"ids:{seed}")
        self.contacts: list[Contact] = []  # by seq
        self.index = TimeIndex()  # updated_at, created_at, opt_out_date -> seq
        self.by_id: dict[str, Contact] = {}
        self.by_email: dict[str, Contact] = {}
        self.lists: dict[str, ContactList] = {}
        self.custom_fields: dict[str, str] = {}  # name -> custom_field_id
        self.custom_field_defs: dict[str, CustomFieldDef] = {}  # custom_field_id -> definition
        self.campaigns: dict[str, Campaign] = {}  # campaign_id -> Campaign (filled by Tracking)
        self.skew_ms = 0  # fault: writes stamp updated_at in the past
        self.resubscribe_sent: dict[str, tuple[str, ...]] = {}  # contact_id -> list_ids
        self.on_change: Callable[[Contact], None] | None = None

    # ids and time -------------------------------------------------------------------------
    def new_id(self) -> str:
        """A fresh UUID-shaped id (seeded: the same run mints the same ids)."""
        h = f"{self._rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"

    def stamp(self) -> int:
        """The time written on a change (the skew fault shifts it into the past)."""
        return self.clock.now_ms() - self.skew_ms

    # lookups ------------------------------------------------------------------------------
    def contact(self, contact_id: str, *, deleted_ok: bool = True) -> Contact:
        """The contact with this id, or NotFound."""
        c = self.by_id.get(contact_id)
        if c is None or (c.deleted and not deleted_ok):
            raise NotFound(f"Contact {contact_id} not found.")
        return c

    def contact_list(self, list_id: str) -> ContactList:
        """The live list with this id, or NotFound."""
        lst = self.lists.get(list_id)
        if lst is None or lst.deleted_at is not None:
            raise NotFound(f"List {list_id} not found.")
        return lst

    def find_email(self, address: str) -> Contact | None:
        """The contact owning an address, deleted ones included."""
        return self.by_email.get(normalise(address))

    def check_lists(self, list_ids: list[str] | tuple[str, ...], field: str) -> None:
        """Invalid (naming the field) unless every list exists."""
        for list_id in list_ids:
            lst = self.lists.get(list_id)
            if lst is None or lst.deleted_at is not None:
                raise Invalid(f"{field}: list {list_id} does not exist.")

    # creation -----------------------------------------------------------------------------
    def add_list(self, name: str, description: str | None = None) -> ContactList:
        """Create a list; Conflict if the name is taken."""
        for lst in self.lists.values():
            if lst.name == name and lst.deleted_at is None:
                raise Conflict(f"A list named {name!r} already exists.", "contacts.api.conflict")
        lst = ContactList(self.new_id(), name, self.stamp(), description)
        self.lists[lst.list_id] = lst
        return lst

    def add_custom_field(self, label: str, kind: str = "string") -> CustomFieldDef:
        """Define a custom field; Conflict if its name (from the label) is taken."""
        if kind not in ("string", "date"):
            raise Invalid(f"type: {kind!r} is not one of string, date")
        name = field_name(label)
        if not name.strip("_"):
            raise Invalid(f"label: {label!r} has no letters or digits")
        if name in self.custom_fields:
            raise Conflict(f"A custom field named {name!r} already exists.")
        definition = CustomFieldDef(self.new_id(), label.strip(), kind, self.stamp())
        self.custom_fields[definition.name] = definition.custom_field_id
        self.custom_field_defs[definition.custom_field_id] = definition
        return definition

    def delete_custom_field(self, custom_field_id: str) -> None:
        """Remove a definition and its values from every contact."""
        definition = self.custom_field_defs.pop(custom_field_id, None)
        if definition is None:
            raise NotFound(f"Custom field {custom_field_id} not found.")
        del self.custom_fields[definition.name]
        for c in self.contacts:
            if any(cid == custom_field_id for cid, _ in c.custom_fields):
                c.custom_fields = tuple(x for x in c.custom_fields if x[0] != custom_field_id)
                self._changed(c, "Account", profile=True)

    def add_contact(self, address: str, *, source: str, permission: str = "implicit") -> Contact:
        """Create a contact; Conflict if the address belongs to any contact, deleted included."""
        key = normalise(address)
        if key in self.by_email:
            raise Conflict("Validation failed: EmailAddress is not unique")
        c = Contact(len(self.contacts), self.new_id(), address.strip(), self.stamp(), source)
        c.permission = permission
        if permission in ("unsubscribed", "not_set"):
            c.opt_in_source = None
            c.opt_in_date = None
        if permission == "unsubscribed":
            c.opt_out_source = source
            c.opt_out_date = c.created_at
        if permission == "pending_confirmation":
            c.confirm_status = "pending"
        self._register(c)
        return c

    def _register(self, c: Contact) -> None:
        self.contacts.append(c)
        self.by_id[c.contact_id] = c
        self.by_email[normalise(c.email)] = c
        c.attach(self.index)

    def register_seeded(self, contacts: list[Contact]) -> None:
        """Add contacts built directly (the seeder): the indexes are built in one sort each
        rather than by a million inserts. Their ``seq`` must continue ``contacts``."""
        base = len(self.contacts)
        for k, c in enumerate(contacts):
            if c.seq != base + k:
                raise ValueError(f"seq: contact {c.contact_id} has {c.seq}, expected {base + k}")
        self.contacts.extend(contacts)
        for c in contacts:
            self.by_id[c.contact_id] = c
            self.by_email[normalise(c.email)] = c
        index = self.index
        every = self.contacts
        index.build(
            [make_key(c.updated_at, c.seq) for c in every],
            [make_key(c.created_at, c.seq) for c in every],
            [make_key(c.opt_out_date, c.seq) for c in every if c.opt_out_date is not None],
        )
        for c in contacts:
            c.attach(index, insert=False)

    # changes ------------------------------------------------------------------------------
    def _changed(self, c: Contact, source: str, *, profile: bool) -> None:
        if profile:
            c.updated_at = self.stamp()
            c.update_source = source
        c.touch()
        if self.on_change is not None:
            self.on_change(c)

    def commit(self, c: Contact, source: str) -> None:
        """Record a profile change made directly on ``c``: moves ``updated_at``."""
        self._changed(c, source, profile=True)

    def edit_contact(self, contact_id: str, *, source: str = "Account", **fields: object) -> None:
        """Change core fields (and ``email``); moves the contact's ``updated_at``."""
        _check_source(source)
        c = self.contact(contact_id)
        for name, value in fields.items():
            if name == "email":
                self.change_email(c, str(value))
            elif name in CORE_FIELDS:
                setattr(c, name, value)
            else:
                raise Invalid(f"{name}: not a core contact field")
        self._changed(c, source, profile=True)

    def change_email(self, c: Contact, address: str) -> None:
        """Move a contact to a new address (same id); Conflict if another contact owns it."""
        key = normalise(address)
        owner = self.by_email.get(key)
        if owner is not None and owner is not c:
            raise Conflict("Validation failed: EmailAddress is not unique")
        if owner is c and c.email == address.strip():
            return
        self.by_email.pop(normalise(c.email), None)
        c.email = address.strip()
        self.by_email[key] = c
        c.email_updated_at = self.stamp()

    def unsubscribe(
        self, contact_id: str, *, reason: str | None = None, source: str = "Contact"
    ) -> None:
        """Opt the contact out. Moves ``email_address.updated_at`` and ``opt_out_date`` only."""
        _check_source(source)
        c = self.contact(contact_id)
        self.opt_out(c, reason=reason, source=source)

    def opt_out(
        self, c: Contact, *, reason: str | None, source: str, at: int | None = None
    ) -> None:
        """Unsubscribe ``c`` (no-op when already unsubscribed); never moves ``updated_at``."""
        if c.permission == "unsubscribed":
            return
        now = self.stamp() if at is None else at
        c.permission = "unsubscribed"
        c.opt_out_source = source
        c.opt_out_date = now
        c.opt_out_reason = reason
        c.email_updated_at = now
        c.confirm_status = "off"
        self._changed(c, source, profile=False)

    def set_permission(self, c: Contact, permission: str, *, source: str) -> None:
        """Set a subscribed state (explicit, implicit, ...); clears any opt-out."""
        if c.permission == permission:
            return
        now = self.stamp()
        c.permission = permission
        c.opt_out_source = None
        c.opt_out_date = None
        c.opt_out_reason = None
        c.opt_in_source = source
        c.opt_in_date = now
        c.confirm_status = "pending" if permission == "pending_confirmation" else "off"
        c.email_updated_at = now
        self._changed(c, source, profile=False)

    def join_list(self, contact_id: str, list_id: str, *, source: str = "Account") -> bool:
        """Add a membership (moves ``updated_at``); False if already a member."""
        c = self.contact(contact_id, deleted_ok=False)
        self.contact_list(list_id)
        if list_id in c.lists:
            return False
        if len(c.lists) >= MAX_LISTS_PER_CONTACT:
            raise Invalid(f"Contact {contact_id} is already on {MAX_LISTS_PER_CONTACT} lists.")
        c.lists = (*c.lists, list_id)
        self._changed(c, source, profile=True)
        return True

    def leave_list(self, contact_id: str, list_id: str, *, source: str = "Account") -> bool:
        """Remove a membership (moves ``updated_at``); False if not a member."""
        c = self.contact(contact_id)
        if list_id not in c.lists:
            return False
        c.lists = tuple(x for x in c.lists if x != list_id)
        self._changed(c, source, profile=True)
        return True

    def delete_contact(self, contact_id: str) -> None:
        """Soft delete: hidden by default, keeps address and permission, loses its lists."""
        c = self.contact(contact_id, deleted_ok=False)
        now = self.stamp()
        c.deleted_at = now
        c.lists = ()
        # Whether deletion moves updated_at is unconfirmed; it strips lists, which does.
        self._changed(c, "Account", profile=True)

    def revive(self, c: Contact, source: str) -> None:
        """Bring a deleted contact back (same id, permission and opt-out kept)."""
        if c.deleted_at is None:
            return
        c.deleted_at = None
        self._changed(c, source, profile=True)

    def send_resubscribe(self, contact_id: str, list_ids: tuple[str, ...]) -> None:
        """Record the one confirmation email; the contact stays unsubscribed until it confirms."""
        c = self.contact(contact_id, deleted_ok=False)
        if c.permission != "unsubscribed":
            raise Invalid(f"Contact {contact_id} is not unsubscribed.")
        if contact_id in self.resubscribe_sent:
            raise Conflict(f"A resubscribe email was already sent to contact {contact_id}.")
        self.check_lists(list_ids, "list_ids")
        self.resubscribe_sent[contact_id] = list_ids
        c.confirm_status = "pending"
        c.touch()

    def confirm_resubscribe(self, contact_id: str) -> None:
        """The contact clicks the confirmation link: explicit again, added to the lists."""
        c = self.contact(contact_id)
        list_ids = self.resubscribe_sent.get(contact_id)
        if list_ids is None:
            raise NotFound(f"No resubscribe email was sent to contact {contact_id}.")
        self.set_permission(c, "explicit", source="Contact")
        c.confirm_status = "confirmed"
        for list_id in list_ids:
            if list_id not in c.lists and list_id in self.lists:
                c.lists = (*c.lists, list_id)
        self._changed(c, "Contact", profile=True)

    def delete_list(self, list_id: str) -> int:
        """Delete a list and its memberships; returns how many contacts left it."""
        lst = self.contact_list(list_id)
        lst.deleted_at = self.stamp()
        lst.updated_at = lst.deleted_at
        removed = 0
        for c in self.contacts:
            if list_id in c.lists:
                c.lists = tuple(x for x in c.lists if x != list_id)
                self._changed(c, "Account", profile=True)
                removed += 1
        return removed

    def membership_counts(self, *, active_only: bool) -> dict[str, int]:
        """list_id -> members (``active_only``: subscribed ones)."""
        counts = dict.fromkeys(self.lists, 0)
        for c in self.contacts:
            if not c.lists:
                continue
            if active_only and c.permission == "unsubscribed":
                continue
            for list_id in c.lists:
                counts[list_id] = counts.get(list_id, 0) + 1
        return counts


def _check_source(source: str) -> None:
    if source not in _SOURCES:
        raise Invalid(f"update_source: {source!r} is not one of Contact, Account")
