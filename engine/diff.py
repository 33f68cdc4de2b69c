"""Observation to events: compare an observed record with the projected state, emit only the
differences. Pure; the ids it gives are deterministic in (store, entity, content, basis)."""

from __future__ import annotations

from engine.events import (
    ContactChanged,
    ContactDeleted,
    ContactObserved,
    ContactRestored,
    EventBase,
    FieldChange,
    ListChanged,
    ListDeleted,
    ListObserved,
    MembershipAdded,
    MembershipRemoved,
    PermissionChanged,
    content_id,
)
from engine.log import NewEvent
from engine.model import ContactRecord, ListRecord, Store

__all__ = ["diff_contact", "diff_list"]


def _new(event: EventBase, basis: int) -> NewEvent:
    # The basis (position of the state the diff was made against) makes the id deterministic
    # for the same observation of the same state, yet distinct when a value returns later.
    return NewEvent(content_id(event, str(basis)), event)


def diff_contact(
    store: Store, state_record: ContactRecord | None, basis: int, rec: ContactRecord
) -> list[NewEvent]:
    """Events that carry ``state_record`` (the projection, at log position ``basis``) to ``rec``."""
    key = rec.store_id
    when = rec.updated_at
    if state_record is None:
        return [_new(ContactObserved(store=store, key=key, source_time=when, contact=rec), basis)]
    old = state_record
    changes: dict[str, FieldChange] = {}
    if rec.email != old.email:
        changes["email"] = FieldChange(old.email, rec.email)
    if rec.fields != old.fields:
        for name in sorted(old.fields.keys() | rec.fields.keys()):
            a, b = old.fields.get(name), rec.fields.get(name)
            if a != b:
                changes[name] = FieldChange(a, b)
    rest: list[NewEvent] = []  # the events after the field changes, each carrying ``when``
    if rec.permission != old.permission:
        ev = PermissionChanged(
            store=store,
            key=key,
            source_time=rec.permission.changed_at,
            email=rec.email,
            old=old.permission,
            new=rec.permission,
            updated_at=when,
        )
        rest.append(_new(ev, basis))
    if rec.lists != old.lists:
        before, after = set(old.lists), set(rec.lists)
        for list_id in sorted(after - before):
            ev1 = MembershipAdded(store=store, key=key, source_time=when, list_id=list_id)
            rest.append(_new(ev1, basis))
        for list_id in sorted(before - after):
            ev2 = MembershipRemoved(store=store, key=key, source_time=when, list_id=list_id)
            rest.append(_new(ev2, basis))
    if rec.deleted != old.deleted:
        cls = ContactDeleted if rec.deleted else ContactRestored
        rest.append(_new(cls(store=store, key=key, source_time=when, email=rec.email), basis))
    # The store modified the record after the state's time, yet nothing ccsync syncs differs
    # from it: an edit outside the synced fields, or one undone again (a list that ccsync
    # added her to, and that she left again before any cycle saw her on it). An event with no
    # changes records the time. It is a new observed state, so the reconciler decides the
    # contact again on it, and a write decided again is a new command (its basis moved), not
    # the one the outbox holds as applied.
    edited = when is not None and old.updated_at is not None and when > old.updated_at
    out: list[NewEvent] = []
    if changes or (edited and not rest):
        out.append(
            _new(ContactChanged(store=store, key=key, source_time=when, changes=changes), basis)
        )
    out.extend(rest)
    return out


def diff_list(store: Store, old: ListRecord | None, basis: int, rec: ListRecord) -> list[NewEvent]:
    """Events that carry a projected list to the observed one."""
    if old is None:
        return [
            _new(
                ListObserved(store=store, key=rec.store_id, source_time=rec.updated_at, list=rec),
                basis,
            )
        ]
    out: list[NewEvent] = []
    changes: dict[str, FieldChange] = {}
    if old.name != rec.name:
        changes["name"] = FieldChange(old.name, rec.name)
    if old.description != rec.description:
        changes["description"] = FieldChange(old.description, rec.description)
    if changes:
        out.append(
            _new(
                ListChanged(
                    store=store, key=rec.store_id, source_time=rec.updated_at, changes=changes
                ),
                basis,
            )
        )
    if rec.deleted and not old.deleted:
        out.append(
            _new(ListDeleted(store=store, key=rec.store_id, source_time=rec.updated_at), basis)
        )
    return out
