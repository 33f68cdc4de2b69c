"""The event vocabulary: every fact the engine records, as frozen, tagged msgspec Structs.

Rules (see CONVENTIONS.md): tags are explicit, stable and dotted, never the class name; new
fields get defaults; a field never changes type; a breaking change gets a new schema version
and an upcaster (engine.codec) applied on read.

Every event names the ``store`` it is about (``ctct``, ``app``, or ``engine`` for the engine's
own bookkeeping), the ``key`` of its entity in that store, and the source's own time where one
exists. The engine's recorded-at time, the global position and the stream version live on the
log's envelope (engine.log.Recorded), since the log assigns them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

import msgspec

from engine.model import ContactRecord, ListRecord, PermissionState, TrackingActivity

__all__ = [
    "EVENT_TYPES",
    "AppliedCommand",
    "CheckpointAdvanced",
    "CommandApplied",
    "CommandConfirmed",
    "CommandFailed",
    "CommandIssued",
    "CommandSuperseded",
    "ContactChanged",
    "ContactDeleted",
    "ContactObserved",
    "ContactRestored",
    "Created",
    "DecisionBlocked",
    "Event",
    "EventBase",
    "FieldChange",
    "IdentityLinked",
    "IssuedCommand",
    "ListChanged",
    "ListDeleted",
    "ListObserved",
    "MembershipAdded",
    "MembershipRemoved",
    "PageObserved",
    "Paired",
    "PermissionChanged",
    "RecordRejected",
    "SyncRunFinished",
    "SyncRunStarted",
    "TrackingRecorded",
    "batch_key",
    "content_id",
    "stream_of",
]

StoreName = Literal["ctct", "app", "engine"]


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries."""

    entity: ClassVar[str]
    schema_version: ClassVar[int] = 1

    store: StoreName
    key: str
    source_time: datetime | None = None


class FieldChange(msgspec.Struct, frozen=True, array_like=True):
    """One changed field: its old and new value (None = empty)."""

    old: str | None
    new: str | None


# --- contacts -----------------------------------------------------------------------------


class ContactObserved(EventBase, frozen=True, kw_only=True, tag="contact.observed"):
    """First sight of a contact in a store: a full snapshot."""

    entity: ClassVar[str] = "contact"
    contact: ContactRecord


class ContactChanged(EventBase, frozen=True, kw_only=True, tag="contact.changed"):
    """Profile fields that differ from the projected state (``email`` included)."""

    entity: ClassVar[str] = "contact"
    changes: dict[str, FieldChange]


class ContactDeleted(EventBase, frozen=True, kw_only=True, tag="contact.deleted"):
    """The store deleted the contact (Constant Contact keeps it, soft-deleted)."""

    entity: ClassVar[str] = "contact"
    email: str


class ContactRestored(EventBase, frozen=True, kw_only=True, tag="contact.restored"):
    """A deleted contact is back (Constant Contact revives on PUT or import)."""

    entity: ClassVar[str] = "contact"
    email: str


class PermissionChanged(EventBase, frozen=True, kw_only=True, tag="permission.changed"):
    """The contact's email permission moved, with who did it, why, when and from which campaign."""

    entity: ClassVar[str] = "contact"
    email: str
    old: PermissionState | None
    new: PermissionState
    campaign_activity_id: str | None = None
    # The record's modified time as the store gave it (``source_time`` is the permission's own
    # change time). Written since projection layout 6; None in events written before.
    updated_at: datetime | None = None


class MembershipAdded(EventBase, frozen=True, kw_only=True, tag="membership.added"):
    """The contact (``key``) joined ``list_id`` in this store."""

    entity: ClassVar[str] = "contact"
    list_id: str


class MembershipRemoved(EventBase, frozen=True, kw_only=True, tag="membership.removed"):
    """The contact (``key``) left ``list_id`` in this store."""

    entity: ClassVar[str] = "contact"
    list_id: str


class RecordRejected(EventBase, frozen=True, kw_only=True, tag="record.rejected"):
    """An observed record was invalid: kept verbatim, with the field and the problem."""

    entity: ClassVar[str] = "rejected"
    field: str
    problem: str
    raw: str  # the record as the store sent it (JSON text)


# --- lists --------------------------------------------------------------------------------


class ListObserved(EventBase, frozen=True, kw_only=True, tag="list.observed"):
    """First sight of a list."""

    entity: ClassVar[str] = "list"
    list: ListRecord


class ListChanged(EventBase, frozen=True, kw_only=True, tag="list.changed"):
    """A list's name or description moved."""

    entity: ClassVar[str] = "list"
    changes: dict[str, FieldChange]


class ListDeleted(EventBase, frozen=True, kw_only=True, tag="list.deleted"):
    """A list was deleted."""

    entity: ClassVar[str] = "list"


# --- tracking -----------------------------------------------------------------------------


class TrackingRecorded(EventBase, frozen=True, kw_only=True, tag="tracking.recorded"):
    """A send, open, click, bounce, forward or opt-out of one contact (``key``) in a campaign."""

    entity: ClassVar[str] = "tracking"
    schema_version: ClassVar[int] = 2  # v1 called the activity field "activity_type"
    activity: TrackingActivity


# --- observation bookkeeping --------------------------------------------------------------


class PageObserved(EventBase, frozen=True, kw_only=True, tag="page.observed"):
    """A page fetched from a store: what was asked, how many items, and a hash of the content."""

    entity: ClassVar[str] = "page"
    run_id: str
    request: str
    item_count: int
    content_hash: str


class CheckpointAdvanced(EventBase, frozen=True, kw_only=True, tag="checkpoint.advanced"):
    """A store's observation checkpoint (``key`` is its name) moved to ``value``."""

    entity: ClassVar[str] = "checkpoint"
    run_id: str
    value: str


class SyncRunStarted(EventBase, frozen=True, kw_only=True, tag="sync.run_started"):
    """A sync cycle began; ``bound`` is the upper limit no checkpoint may pass in this run."""

    entity: ClassVar[str] = "run"
    bound: datetime
    mode: str = "incremental"


class SyncRunFinished(EventBase, frozen=True, kw_only=True, tag="sync.run_finished"):
    """A sync cycle ended, with its outcome and counts."""

    entity: ClassVar[str] = "run"
    outcome: Literal["ok", "partial", "failed", "interrupted"]
    counts: dict[str, int] = {}
    error: str | None = None


# --- commands -----------------------------------------------------------------------------


class IssuedCommand(msgspec.Struct, frozen=True, kw_only=True):
    """One command of a ``command.issued`` batch."""

    command_id: str  # content-derived (engine.commands.command_id)
    kind: str
    command: dict[str, Any]


class CommandIssued(EventBase, frozen=True, kw_only=True, tag="command.issued"):
    """Commands about to be sent to ``store``, recorded before any call (``key``: the batch's
    id, derived from its command ids). One event per batch: a sync that writes 100,000
    contacts records a few dozen of these, not 100,000."""

    entity: ClassVar[str] = "command"
    schema_version: ClassVar[int] = 2  # v1 carried one command: key = its id, kind, command
    run_id: str
    commands: tuple[IssuedCommand, ...]


class Paired(msgspec.Struct, frozen=True, array_like=True):
    """A contact a command created (its id, as the store gave it) and the contact of the other
    store it was made from: the same person, paired from the write's outcome, before any
    observation of the new contact (projected into p_links like ``identity.linked``)."""

    ctct_id: str
    app_id: str
    email: str


class Created(msgspec.Struct, frozen=True, array_like=True):
    """A contact a command created in a store that did not say its id (Constant Contact's bulk
    import): the contact of the other store it was made from, and the address it was made
    under. A listing that shows a new contact under that address pairs the two, even if the
    one it was made from has changed its address since (projected into p_created)."""

    source_id: str
    email: str


class AppliedCommand(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    detail: str | None = None  # what the store said, where it said something
    paired: Paired | None = None  # a create whose store said the new contact's id
    created: Created | None = None  # a create whose store did not


class CommandApplied(EventBase, frozen=True, kw_only=True, tag="command.applied"):
    """The target store confirmed these commands (``key``: the batch's id)."""

    entity: ClassVar[str] = "command"
    schema_version: ClassVar[int] = 2  # v1: one command, key = its id, detail
    run_id: str
    applied: tuple[AppliedCommand, ...]


class CommandFailed(EventBase, frozen=True, kw_only=True, tag="command.failed"):
    """The target store refused the command, or the call failed; ``error`` is the remote text."""

    entity: ClassVar[str] = "command"
    run_id: str
    error: str
    retriable: bool
    attempt: int = 1


class CommandConfirmed(EventBase, frozen=True, kw_only=True, tag="command.confirmed"):
    """Observation after these commands were applied shows the target store in the state they
    asked for: deciding again on the current state of both stores no longer produces them
    (``key``: the batch's id)."""

    entity: ClassVar[str] = "command"
    schema_version: ClassVar[int] = 2  # v1: one command, key = its id
    run_id: str
    command_ids: tuple[str, ...]


class CommandSuperseded(EventBase, frozen=True, kw_only=True, tag="command.superseded"):
    """A command left without success is no longer wanted: deciding again on the current
    state of both stores did not produce it (the store caught up, or things moved on)."""

    entity: ClassVar[str] = "command"
    run_id: str
    reason: str
    # The command that asks again for what this one asked (the store did not show it); None
    # when nothing replaces it (and in events written before it was recorded).
    successor: str | None = None


class IdentityLinked(EventBase, frozen=True, kw_only=True, tag="identity.linked"):
    """The engine paired a Constant Contact contact with an app contact (by normalised email;
    a contact ccsync created is paired by its create's outcome instead: ``Paired``).

    ``key`` is the Constant Contact contact_id. The pair outlives later email changes on
    either side: each store's own id is stable, the address is not.
    """

    entity: ClassVar[str] = "link"
    app_id: str
    email: str


class DecisionBlocked(EventBase, frozen=True, kw_only=True, tag="decision.blocked"):
    """The reconciler refused an action policy forbids (e.g. re-subscribing an opted-out
    contact)."""

    entity: ClassVar[str] = "decision"
    email: str
    action: str
    reason: str
    basis: int = 0  # log position of the state decided on: the same state is recorded once


Event = (
    ContactObserved
    | ContactChanged
    | ContactDeleted
    | ContactRestored
    | PermissionChanged
    | MembershipAdded
    | MembershipRemoved
    | RecordRejected
    | ListObserved
    | ListChanged
    | ListDeleted
    | TrackingRecorded
    | PageObserved
    | CheckpointAdvanced
    | SyncRunStarted
    | SyncRunFinished
    | CommandIssued
    | CommandApplied
    | CommandFailed
    | CommandConfirmed
    | CommandSuperseded
    | IdentityLinked
    | DecisionBlocked
)

EVENT_TYPES: Final[dict[str, type[EventBase]]] = {
    cls.__struct_config__.tag: cls for cls in Event.__args__
}


def stream_of(event: EventBase) -> str:
    """The stream an event belongs to: ``store:entity:key``."""
    return f"{event.store}:{event.entity}:{event.key}"


_encoder: Final = msgspec.json.Encoder(order="sorted")


def batch_key(command_ids: Iterable[str]) -> str:
    """The key of a batch event about these commands (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(command_ids)).encode()).hexdigest()[:32]


def content_id(event: EventBase, *salt: str) -> str:
    """A deterministic event id from the event's store, entity and content.

    Observing the same thing twice yields the same id, so the log appends it once. ``salt``
    separates facts that are equal in content but distinct in meaning (for instance the
    same membership added again after it was removed: the producer salts with the stream
    version it observed).
    """
    h = hashlib.sha256(_encoder.encode(event))
    for part in salt:
        h.update(b"\x00")
        h.update(part.encode())
    return h.hexdigest()[:32]
