"""Every event type survives the log's encoding; old and unknown rows are handled loudly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from engine.codec import current_version, decode_event, encode_event
from engine.errors import LogCorruptError, UnknownEventError
from engine.events import (
    EVENT_TYPES,
    CommandApplied,
    CommandConfirmed,
    CommandIssued,
    EventBase,
    TrackingRecorded,
)
from engine.log import EventLog
from engine.logverify import verify_log
from tests.log.samples import CONTACT, T0, every_event, new

SAMPLES = {e.__struct_config__.tag: e for e in every_event()}


def test_every_event_type_has_a_realistic_sample() -> None:
    assert set(SAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("tag", sorted(EVENT_TYPES))
def test_round_trip_through_the_codec(tag: str) -> None:
    event = SAMPLES[tag]
    payload = encode_event(event)
    back = decode_event(tag, current_version(tag), payload, position=1)
    assert back == event
    assert type(back) is EVENT_TYPES[tag]
    assert msgspec.json.decode(payload)["type"] == tag


@pytest.mark.asyncio
@pytest.mark.parametrize("tag", sorted(EVENT_TYPES))
async def test_round_trip_through_the_log(tag: str, log: EventLog) -> None:
    event = SAMPLES[tag]
    await log.append([new(event)])
    [stored] = [r async for r in log.read()]
    assert stored.event == event
    assert stored.stream == f"{event.store}:{event.entity}:{event.key}"


def _v1_tracking_payload() -> bytes:
    """A tracking.recorded row as schema version 1 wrote it (Constant Contact's codes)."""
    return msgspec.json.encode(
        {
            "type": "tracking.recorded",
            "store": "ctct",
            "key": CONTACT,
            "source_time": "2024-05-01T09:30:00Z",
            "activity": {
                "contact_id": CONTACT,
                "email": "ann@example.org",
                "campaign_activity_id": "a3b0c1d2-0000-4000-8000-000000000001",
                "activity_type": "em_opens",
                "created_time": "2024-05-01T09:30:00Z",
            },
        }
    )


def test_version_1_tracking_event_is_upcast_on_read() -> None:
    event = decode_event("tracking.recorded", 1, _v1_tracking_payload(), position=7)
    assert isinstance(event, TrackingRecorded)
    assert event.activity.kind == "open"
    assert event.activity.created_time == T0


def test_unknown_tag_names_the_position_and_the_tag() -> None:
    with pytest.raises(
        UnknownEventError, match=r"position 12: unknown event type 'contact\.merged'"
    ):
        decode_event("contact.merged", 1, b"{}", position=12)


def test_future_schema_version_is_refused_not_guessed() -> None:
    payload = encode_event(SAMPLES["contact.deleted"])
    with pytest.raises(UnknownEventError, match=r"position 3: contact\.deleted schema version 9"):
        decode_event("contact.deleted", 9, payload, position=3)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"type":"contact.deleted","store":"ctct"', "truncated"),
        (b'{"type":"contact.deleted","store":"ctct","key":"k"}', "email"),
        (b'{"type":"contact.deleted","store":"mars","key":"k","email":"a@b.c"}', "store"),
        (b'{"type":"list.deleted","store":"ctct","key":"k"}', "payload says 'list.deleted'"),
    ],
)
def test_corrupt_payload_says_where_and_what(payload: bytes, problem: str) -> None:
    with pytest.raises(LogCorruptError, match="position 5") as caught:
        decode_event("contact.deleted", 1, payload, position=5)
    assert problem in str(caught.value)


def test_corrupt_old_payload_cannot_be_upcast() -> None:
    payload = msgspec.json.encode({"type": "tracking.recorded", "activity": "em_opens"})
    with pytest.raises(LogCorruptError, match=r"position 2: tracking\.recorded v1"):
        decode_event("tracking.recorded", 1, payload, position=2)


async def _hand_written_rows(path: Path, rows: list[tuple[str, int, bytes]]) -> None:
    """Append rows the way another build (or a bad write) left them, hash chain intact."""
    from engine._logschema import GENESIS, row_hash

    conn = sqlite3.connect(path)
    prev = conn.execute("SELECT hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
    prev_hash = prev[0] if prev else GENESIS
    (pos,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    for i, (tag, version, payload) in enumerate(rows):
        p = pos + i + 1
        args = (p, f"id-{p}", f"ctct:x:{p}", 1, tag, version, "2024-05-01T09:31:00.000000Z")
        prev_hash = row_hash(prev_hash, *args, payload)
        conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", (*args, payload, prev_hash))
    conn.commit()
    conn.close()


@pytest.mark.asyncio
async def test_v1_row_in_a_log_reads_upcast_and_verifies(log: EventLog, log_path: Path) -> None:
    await log.append([new(SAMPLES["contact.deleted"])])
    await log.close()
    await _hand_written_rows(log_path, [("tracking.recorded", 1, _v1_tracking_payload())])
    async with await EventLog.open(log_path, writer=False) as reader:
        events = [r.event async for r in reader.read()]
        assert isinstance(events[1], TrackingRecorded)
        assert events[1].activity.kind == "open"
        assert (await verify_log(reader)).ok


@pytest.mark.asyncio
async def test_unknown_and_corrupt_rows_stop_reads_and_are_reported_by_verify(
    log: EventLog, log_path: Path
) -> None:
    await log.append([new(e) for e in every_event()[:3]])
    await log.close()
    await _hand_written_rows(
        log_path,
        [
            ("contact.merged", 1, b'{"type":"contact.merged"}'),
            ("contact.deleted", 1, b"\xff not json"),
            ("contact.deleted", 1, encode_event(SAMPLES["contact.deleted"])),
            ("contact.deleted", 9, encode_event(SAMPLES["contact.deleted"])),
        ],
    )
    async with await EventLog.open(log_path, writer=False) as reader:
        seen: list[EventBase] = []

        async def read_all() -> None:
            async for r in reader.read():
                seen.append(r.event)

        with pytest.raises(UnknownEventError, match="position 4: unknown event type"):
            await read_all()
        assert len(seen) == 3  # everything before the bad row, nothing after it skipped to
        with pytest.raises(LogCorruptError, match="position 5"):
            [r async for r in reader.read(5)]
        report = await verify_log(reader)
    assert report.first_bad == 4
    assert any("position 4: unknown event type 'contact.merged'" in p for p in report.problems)
    assert any(p.startswith("position 5: contact.deleted payload") for p in report.problems)
    assert any(
        "position 7: contact.deleted schema version 9 is unknown" in p for p in report.problems
    )
    assert report.checked == 7


# Before commands were recorded in batches, each command had its own events (schema v1).
V1_COMMANDS = [
    (
        "command.issued",
        b'{"type":"command.issued","store":"app","key":"c0ffee00c0ffee00c0ffee00c0ffee00",'
        b'"kind":"contact.unsubscribe","command":{"email":"ann@example.org"},"run_id":"r1"}',
    ),
    (
        "command.applied",
        b'{"type":"command.applied","store":"app","key":"c0ffee00c0ffee00c0ffee00c0ffee00",'
        b'"run_id":"r1","detail":"1 row"}',
    ),
    (
        "command.confirmed",
        b'{"type":"command.confirmed","store":"app","key":"c0ffee00c0ffee00c0ffee00c0ffee00",'
        b'"run_id":"r2"}',
    ),
]


def test_version_1_command_events_read_as_batches_of_one() -> None:
    cid = "c0ffee00c0ffee00c0ffee00c0ffee00"
    issued, applied, confirmed = (decode_event(t, 1, p, position=1) for t, p in V1_COMMANDS)
    assert isinstance(issued, CommandIssued) and issued.key == cid
    assert [(c.command_id, c.kind, c.command) for c in issued.commands] == [
        (cid, "contact.unsubscribe", {"email": "ann@example.org"})
    ]
    assert isinstance(applied, CommandApplied)
    assert [(a.command_id, a.detail) for a in applied.applied] == [(cid, "1 row")]
    assert isinstance(confirmed, CommandConfirmed) and confirmed.command_ids == (cid,)
