"""The engine's normalised model of what a store holds.

Both adapters translate their own shapes (Constant Contact's JSON, the app's rows) into these
Structs, and the rest of the engine sees nothing else. Profile fields are a flat mapping of
field name to string (``first_name``, ``phone_mobile``, ``address_home_city``, ``cf:tier`` ...):
absent means empty, so diffs and policies treat every field alike.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, Literal

import msgspec

__all__ = [
    "PERMISSIONS",
    "STORES",
    "SUBSCRIBED",
    "TRACKING_KINDS",
    "ContactRecord",
    "ListRecord",
    "Permission",
    "PermissionState",
    "Store",
    "TrackingActivity",
    "TrackingKind",
    "is_valid_email",
    "normalise_email",
]

Store = Literal["ctct", "app"]
STORES: Final[tuple[Store, ...]] = ("ctct", "app")

# Constant Contact's permission vocabulary is the engine's: the app adapter maps into it.
Permission = Literal[
    "explicit", "implicit", "not_set", "pending_confirmation", "temp_hold", "unsubscribed"
]
PERMISSIONS: Final[frozenset[str]] = frozenset(
    ("explicit", "implicit", "not_set", "pending_confirmation", "temp_hold", "unsubscribed")
)
SUBSCRIBED: Final[frozenset[str]] = frozenset(("explicit", "implicit"))

TrackingKind = Literal["send", "open", "click", "bounce", "forward", "optout"]
TRACKING_KINDS: Final[tuple[TrackingKind, ...]] = (
    "send",
    "open",
    "click",
    "bounce",
    "forward",
    "optout",
)

# Deliberately simple: one @, a dot in the domain, no spaces, within RFC 5321's 254 octets.
# Stricter validation belongs to the stores themselves; we only refuse what cannot be an address.
_EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_email(address: str) -> str:
    """The identity rule across stores: trimmed, Unicode-casefolded.

    Local parts are case-sensitive in theory, but neither Constant Contact nor any CRM we sync
    with treats ``Ann@x.org`` and ``ann@x.org`` as two people, so neither do we. Dots and
    ``+tags`` are kept: they may be distinct mailboxes.
    """
    return address.strip().casefold()


def is_valid_email(address: str) -> bool:
    """Whether ``address`` (already normalised) can be an email address."""
    return len(address) <= 254 and _EMAIL_RE.match(address) is not None


class PermissionState(msgspec.Struct, frozen=True, kw_only=True):
    """A contact's email permission as one store states it."""

    status: Permission
    source: str | None = None  # "Contact" (their own action) or "Account" (the sender's)
    reason: str | None = None
    changed_at: datetime | None = None  # the store's own time of the last change


class ContactRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One contact as observed in one store, normalised."""

    store_id: str  # Constant Contact's contact_id, or the app's key column
    email: str  # normalised (see normalise_email)
    fields: dict[str, str] = {}
    permission: PermissionState = PermissionState(status="not_set")
    lists: tuple[str, ...] = ()  # sorted list ids, in the store's own id space
    deleted: bool = False
    updated_at: datetime | None = None  # the store's modified time for the record


class ListRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A contact list (Constant Contact) or list/segment (the app)."""

    store_id: str
    name: str
    description: str | None = None
    deleted: bool = False
    updated_at: datetime | None = None


class TrackingActivity(msgspec.Struct, frozen=True, kw_only=True):
    """One send, open, click, bounce, forward or opt-out of one contact in one campaign."""

    contact_id: str
    email: str
    campaign_activity_id: str
    kind: TrackingKind
    created_time: datetime
    campaign_name: str | None = None
    details: dict[str, str] = {}  # link_url, bounce_code, device_type, opt_out_reason ...
