"""Pure folds of contact events into one store's contact state.

``evolve(state, event, position)`` returns the new state; it never does I/O. The runner
(projections.runner) loads states, folds events into them and writes them back with its
checkpoint in one transaction; rebuild and as-of replay are the same fold from position 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from engine.events import (
    ContactChanged,
    ContactDeleted,
    ContactObserved,
    ContactRestored,
    EventBase,
    MembershipAdded,
    MembershipRemoved,
    PermissionChanged,
)
from engine.model import ContactRecord, PermissionState, Store

__all__ = ["CONTACT_EVENTS", "ContactState", "evolve_contact"]

CONTACT_EVENTS = (
    ContactObserved,
    ContactChanged,
    ContactDeleted,
    ContactRestored,
    PermissionChanged,
    MembershipAdded,
    MembershipRemoved,
)


class ContactState(msgspec.Struct, frozen=True, kw_only=True):
    """A contact as the log says one store holds it, as of ``position``."""

    store: Store
    store_id: str
    email: str
    fields: dict[str, str] = {}
    permission: PermissionState = PermissionState(status="not_set")
    lists: tuple[str, ...] = ()
    deleted: bool = False
    updated_at: datetime | None = None
    position: int = 0  # the log position of the last event folded in

    def record(self) -> ContactRecord:
        """The state as the store's record, for diffing a new observation against it."""
        return ContactRecord(
            store_id=self.store_id,
            email=self.email,
            fields=self.fields,
            permission=self.permission,
            lists=self.lists,
            deleted=self.deleted,
            updated_at=self.updated_at,
        )


def evolve_contact(
    state: ContactState | None, event: EventBase, position: int
) -> ContactState | None:
    """Fold one contact event into the state (None: not seen yet)."""
    match event:
        case ContactObserved(contact=c):
            assert event.store != "engine"
            return ContactState(
                store=event.store,
                store_id=c.store_id,
                email=c.email,
                fields=c.fields,
                permission=c.permission,
                lists=c.lists,
                deleted=c.deleted,
                updated_at=c.updated_at,
                position=position,
            )
        case _ if state is None:
            # A change without a snapshot first cannot happen through the observer; a log
            # written by a broken producer is reported by replay --check, not papered over.
            return None
        case ContactChanged(changes=changes):
            fields = dict(state.fields)
            email = state.email
            for name, change in changes.items():
                if name == "email":
                    email = change.new or email
                elif change.new is None:
                    fields.pop(name, None)
                else:
                    fields[name] = change.new
            return _moved(state, position, event.source_time, email=email, fields=fields)
        case PermissionChanged(new=new, updated_at=updated_at):
            # (its source time is the permission's own change time, not the record's)
            return _moved(state, position, updated_at, permission=new)
        # Each event carries the record's modified time, which the diff compares: a listing
        # that shows a later one with nothing else changed is an edit ccsync cannot see.
        case MembershipAdded(list_id=list_id):
            lists = tuple(sorted({*state.lists, list_id}))
            return _moved(state, position, event.source_time, lists=lists)
        case MembershipRemoved(list_id=list_id):
            lists = tuple(x for x in state.lists if x != list_id)
            return _moved(state, position, event.source_time, lists=lists)
        case ContactDeleted():
            return _moved(state, position, event.source_time, deleted=True)
        case ContactRestored():
            return _moved(state, position, event.source_time, deleted=False)
        case _:
            return state


def _moved(
    state: ContactState, position: int, updated_at: datetime | None, **changes: Any
) -> ContactState:
    """``state`` with ``changes``, at ``position``, modified at ``updated_at`` if known."""
    return msgspec.structs.replace(
        state, updated_at=updated_at or state.updated_at, position=position, **changes
    )
