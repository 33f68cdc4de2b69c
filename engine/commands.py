"""Commands: the desired end state the reconciler asks a store to reach.

A command states an end state, not a delta, so applying it twice is harmless. Its id is a hash
of (target store, kind, key, desired state): the same decision made twice has the same id, and
a command already applied is never sent again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final

import msgspec

from engine.model import Store, TrackingActivity

__all__ = [
    "TRACKING_KIND",
    "UNSUBSCRIBE_KIND",
    "AddToList",
    "Command",
    "CommandBase",
    "DeleteContact",
    "Outcome",
    "RecordTracking",
    "RemoveFromList",
    "Unsubscribe",
    "UpsertContact",
    "command_id",
    "command_kind",
]


class CommandBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """What every command names: the store it targets and the contact's identity there."""

    target: Store
    email: str  # normalised: the identity across stores
    store_id: str | None = None  # the target store's own id, when the contact exists there
    # Log position of the target's state the decision was made against. Part of the id, so the
    # same decision on the same observed state is one command, yet a value that drifts back
    # after being corrected gets a new command instead of being taken for already applied.
    basis: int = 0


class UpsertContact(CommandBase, frozen=True, kw_only=True, tag="contact.upsert"):
    """Make these profile fields hold these values (None clears), creating the contact if new.

    ``fields`` carries only the fields to change: adapters must not touch any other field.
    ``new_email`` renames the contact's address (the id stays; the key is the old address).
    """

    fields: dict[str, str | None]
    new_email: str | None = None
    lists: tuple[str, ...] = ()  # for a new contact: the lists it joins (target store ids)
    # For an existing contact: the lists it is on now in the target store. A store that can
    # only write profiles in bulk through a list (Constant Contact's import names at least
    # one) uses one of these, so the update joins the contact to nothing.
    member_of: tuple[str, ...] = ()
    # For a new contact: the id of the contact it is made from, in the other store. The new
    # contact is paired with it as soon as the store says what id it gave it, so a change the
    # store's users make before ccsync has observed it (a new address) is not taken for
    # someone else.
    source_id: str | None = None


class Unsubscribe(CommandBase, frozen=True, kw_only=True, tag="contact.unsubscribe"):
    """Make the contact unsubscribed from all email, carrying the reason and the original time."""

    reason: str | None = None
    source: str = "Contact"  # whose action the opt-out was, as the source store said
    opted_out_at: datetime | None = None


class AddToList(CommandBase, frozen=True, kw_only=True, tag="membership.add"):
    """Make the contact a member of ``list_id`` (the target store's list id)."""

    list_id: str


class RemoveFromList(CommandBase, frozen=True, kw_only=True, tag="membership.remove"):
    """Make the contact not a member of ``list_id``."""

    list_id: str


class DeleteContact(CommandBase, frozen=True, kw_only=True, tag="contact.delete"):
    """Make the contact deleted in the target store (its opt-out, if any, is kept)."""


class RecordTracking(CommandBase, frozen=True, kw_only=True, tag="tracking.record"):
    """Make these tracking activities present in the target store (the app's activities table)."""

    activities: tuple[TrackingActivity, ...]


Command = UpsertContact | Unsubscribe | AddToList | RemoveFromList | DeleteContact | RecordTracking

_encoder: Final = msgspec.json.Encoder(order="sorted")


_KINDS: Final[dict[type, str]] = {
    cls: str(cls.__struct_config__.tag)
    for cls in (
        UpsertContact,
        Unsubscribe,
        AddToList,
        RemoveFromList,
        DeleteContact,
        RecordTracking,
    )
}


# The kind of a tracking record: the one command whose body ``p_commands`` keeps, and which the
# reconciler never decides (it is data, resent as it was issued).
TRACKING_KIND: Final = _KINDS[RecordTracking]
# The kind of an unsubscribe: the command the opt-out audit follows.
UNSUBSCRIBE_KIND: Final = _KINDS[Unsubscribe]


def command_kind(command: CommandBase) -> str:
    # From a table: __struct_config__ builds a new object on every access.
    return _KINDS[type(command)]


def command_id(command: CommandBase) -> str:
    """Content-derived id: same target, kind, key and desired state, same id."""
    return hashlib.sha256(_encoder.encode(command)).hexdigest()[:32]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a store made of one command (a sink returns one per command, in order)."""

    ok: bool
    command_id: str = ""  # filled in by the outbox; a sink may leave it empty
    error: str | None = None  # the store's own error text when not ok
    retriable: bool = False
    detail: str | None = None  # e.g. "not added to list: contact is unsubscribed"
    store_id: str | None = None  # the id the store gave a newly created contact
