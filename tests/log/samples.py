"""Realistic events of every type in engine.events, and helpers to append them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from engine.events import (
    EVENT_TYPES,
    AppliedCommand,
    CheckpointAdvanced,
    CommandApplied,
    CommandFailed,
    CommandIssued,
    ContactChanged,
    ContactDeleted,
    ContactObserved,
    ContactRestored,
    DecisionBlocked,
    EventBase,
    FieldChange,
    IssuedCommand,
    ListChanged,
    ListDeleted,
    ListObserved,
    MembershipAdded,
    MembershipRemoved,
    PageObserved,
    PermissionChanged,
    RecordRejected,
    SyncRunFinished,
    SyncRunStarted,
    TrackingRecorded,
    content_id,
)
from engine.log import NewEvent
from engine.model import ContactRecord, ListRecord, PermissionState, TrackingActivity

__all__ = ["T0", "every_event", "membership", "new"]

T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
CONTACT = "1f7e8a52-0b3c-11ef-a1d2-fa163e5c1a2b"
LIST = "07936f78-662a-11eb-af0a-fa163e56c9b9"
RUN = "run-2024-05-01T09:30"


# Types added by other parts of the engine, as their producers would write them. Given as
# data so this file needs no change of import when the vocabulary grows.
_LATER_TYPES: list[dict[str, object]] = [
    {
        "type": "command.confirmed",
        "store": "app",
        "key": "b47c4b47c4b47c4b47c4b47c4b47c4b4",
        "run_id": RUN,
        "command_ids": ["c0ffee00c0ffee00c0ffee00c0ffee00", "c0ffee00c0ffee00c0ffee00c0ffee03"],
    },
    {
        "type": "command.superseded",
        "store": "ctct",
        "key": "c0ffee00c0ffee00c0ffee00c0ffee02",
        "run_id": RUN,
        "reason": "deciding again on both stores' state no longer produces it",
    },
    {
        "type": "identity.linked",
        "store": "engine",
        "key": CONTACT,
        "app_id": "4711",
        "email": "ann@example.org",
    },
]


def every_event() -> list[EventBase]:
    """One realistic instance of each event type (tests check none is missing)."""
    return _core_events() + [
        msgspec.convert(d, EVENT_TYPES[str(d["type"])])
        for d in _LATER_TYPES
        if d["type"] in EVENT_TYPES
    ]


def _core_events() -> list[EventBase]:
    explicit = PermissionState(
        status="explicit", source="Contact", reason="Signed up on the website", changed_at=T0
    )
    return [
        ContactObserved(
            store="ctct",
            key=CONTACT,
            source_time=T0,
            contact=ContactRecord(
                store_id=CONTACT,
                email="ann.o'neil+news@example.org",
                fields={
                    "first_name": "Ann",
                    "last_name": "O'Neil",
                    "company_name": "Ø Studios",
                    "phone_mobile": "+44 7700 900123",
                    "address_home_city": "Zürich",
                    "cf:tier": "gold",
                },
                permission=explicit,
                lists=(LIST, "9c8d1c2e-662a-11eb-af0a-fa163e56c9b9"),
                updated_at=T0,
            ),
        ),
        ContactChanged(
            store="app",
            key="4711",
            source_time=T0,
            changes={
                "first_name": FieldChange("Anne", "Ann"),
                "job_title": FieldChange(None, "Treasurer"),
            },
        ),
        ContactDeleted(store="ctct", key=CONTACT, source_time=T0, email="ann@example.org"),
        ContactRestored(store="ctct", key=CONTACT, email="ann@example.org"),
        PermissionChanged(
            store="ctct",
            key=CONTACT,
            source_time=T0 + timedelta(days=3),
            email="ann@example.org",
            old=explicit,
            new=PermissionState(
                status="unsubscribed",
                source="Contact",
                reason="No longer interested",
                changed_at=T0 + timedelta(days=3),
            ),
            campaign_activity_id="a3b0c1d2-0000-4000-8000-000000000001",
        ),
        MembershipAdded(store="app", key="4711", list_id="newsletter"),
        MembershipRemoved(store="ctct", key=CONTACT, list_id=LIST),
        RecordRejected(
            store="app",
            key="4712",
            field="email",
            problem="not an email address: 'bob at example'",
            raw='{"id": 4712, "email": "bob at example"}',
        ),
        ListObserved(
            store="ctct",
            key=LIST,
            list=ListRecord(store_id=LIST, name="Monthly newsletter", description="News"),
        ),
        ListChanged(store="ctct", key=LIST, changes={"name": FieldChange("News", "Newsletter")}),
        ListDeleted(store="app", key="old-segment"),
        TrackingRecorded(
            store="ctct",
            key=CONTACT,
            source_time=T0,
            activity=TrackingActivity(
                contact_id=CONTACT,
                email="ann@example.org",
                campaign_activity_id="a3b0c1d2-0000-4000-8000-000000000001",
                kind="click",
                created_time=T0,
                campaign_name="May appeal",
                details={"link_url": "https://example.org/give", "link_id": "3"},
            ),
        ),
        PageObserved(
            store="ctct",
            key="contacts?updated_after=2024-05-01T00:00:00Z",
            run_id=RUN,
            request="GET /v3/contacts?limit=500&updated_after=2024-05-01T00:00:00Z",
            item_count=500,
            content_hash="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
        CheckpointAdvanced(
            store="ctct", key="contacts.updated_after", run_id=RUN, value="2024-05-01T09:00:00Z"
        ),
        SyncRunStarted(store="engine", key=RUN, bound=T0, mode="full"),
        SyncRunFinished(
            store="engine", key=RUN, outcome="partial", counts={"contacts": 1200}, error="quota"
        ),
        CommandIssued(
            store="app",
            key="b47c4b47c4b47c4b47c4b47c4b47c4b4",
            run_id=RUN,
            commands=(
                IssuedCommand(
                    command_id="c0ffee00c0ffee00c0ffee00c0ffee00",
                    kind="contact.unsubscribe",
                    command={"email": "ann@example.org", "reason": "asked", "lists": ["a", "b"]},
                ),
                IssuedCommand(
                    command_id="c0ffee00c0ffee00c0ffee00c0ffee03",
                    kind="contact.upsert",
                    command={"email": "bo@example.org", "fields": {"first_name": "Bo"}},
                ),
            ),
        ),
        CommandApplied(
            store="app",
            key="b47c4b47c4b47c4b47c4b47c4b47c4b4",
            run_id=RUN,
            applied=(
                AppliedCommand(command_id="c0ffee00c0ffee00c0ffee00c0ffee00"),
                AppliedCommand(command_id="c0ffee00c0ffee00c0ffee00c0ffee03", detail="updated"),
            ),
        ),
        CommandFailed(
            store="ctct",
            key="c0ffee00c0ffee00c0ffee00c0ffee01",
            run_id=RUN,
            error="409 Conflict: email already exists",
            retriable=False,
            attempt=2,
        ),
        DecisionBlocked(
            store="engine",
            key=CONTACT,
            email="ann@example.org",
            action="resubscribe",
            reason="opted out in ctct on 2024-05-04; only the contact can opt back in",
        ),
    ]


def membership(contact: int, list_id: str = "newsletter", store: str = "app") -> MembershipAdded:
    """A small event whose stream is ``app:contact:c<contact>``."""
    return MembershipAdded(store=store, key=f"c{contact}", list_id=list_id)  # type: ignore[arg-type]


def new(event: EventBase, *salt: str) -> NewEvent:
    """The event with the content-derived id its producer would give it."""
    return NewEvent(content_id(event, *salt), event)
