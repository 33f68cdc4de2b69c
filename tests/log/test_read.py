"""Reading: by position range (streaming), by stream, by recorded time; gaps are never skipped."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine._logread import only_commands
from engine.errors import LogCorruptError
from engine.events import MembershipAdded
from engine.log import EventLog, NewEvent
from engine.logverify import verify_log
from tests.log.conftest import Clock
from tests.log.samples import T0, membership, new


async def _fill(log: EventLog, clock: Clock, batches: int, size: int) -> None:
    """``batches`` batches one minute apart; event j of batch b is (contact j % 3, list b-j)."""
    for b in range(batches):
        await log.append([new(membership(j % 3, f"{b}-{j}")) for j in range(size)])
        clock.advance(minutes=1)


@pytest.mark.asyncio
async def test_position_ranges_stream_in_small_chunks(log: EventLog, clock: Clock) -> None:
    await _fill(log, clock, batches=5, size=10)
    assert [r.position async for r in log.read(17, 23, chunk=4)] == list(range(17, 23))
    assert [r.position async for r in log.read(45)] == list(range(45, 51))
    assert [r.position async for r in log.read(51)] == []
    batches = [[r.position for r in b] async for b in log.read_batches(1, chunk=16)]
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert [p for b in batches for p in b] == list(range(1, 51))


@pytest.mark.asyncio
async def test_stream_reads_in_version_order(log: EventLog, clock: Clock) -> None:
    await _fill(log, clock, batches=3, size=4)
    c1 = await log.read_stream("app:contact:c1")
    assert [(r.version, r.event.list_id) for r in c1] == [(1, "0-1"), (2, "1-1"), (3, "2-1")]  # type: ignore[attr-defined]
    assert await log.read_stream("app:contact:nobody") == []


@pytest.mark.asyncio
async def test_several_streams_and_positions_are_read_in_log_order(
    log: EventLog, clock: Clock
) -> None:
    await _fill(log, clock, batches=3, size=4)  # position 4b+j+1: contact j % 3, list b-j
    # (an app's key may hold a NUL, which SQLite's JSON functions cut short)
    await log.append([new(MembershipAdded(store="app", key="c\x00x", list_id="z"))])  # type: ignore[arg-type]
    got = await log.read_streams(["app:contact:c\x00x", "app:contact:c2", "app:contact:c0"])
    assert [(r.position, r.stream) for r in got] == [
        (1, "app:contact:c0"),
        (3, "app:contact:c2"),
        (4, "app:contact:c0"),
        (5, "app:contact:c0"),
        (7, "app:contact:c2"),
        (8, "app:contact:c0"),
        (9, "app:contact:c0"),
        (11, "app:contact:c2"),
        (12, "app:contact:c0"),
        (13, "app:contact:c\x00x"),
    ]
    assert await log.read_streams([]) == []
    at = await log.read_at({11, 2, 7})
    assert [(r.position, r.event.list_id) for r in at] == [(2, "0-1"), (7, "1-2"), (11, "2-2")]  # type: ignore[attr-defined]
    assert await log.read_at([]) == []
    with pytest.raises(LogCorruptError, match="no event at position 14"):
        await log.read_at([3, 14])


@pytest.mark.asyncio
async def test_time_range_reads_use_recorded_at(log: EventLog, clock: Clock) -> None:
    await _fill(log, clock, batches=4, size=3)  # batch b recorded at T0 + b minutes
    got = [r async for r in log.read_time(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))]
    assert [r.position for r in got] == [4, 5, 6, 7, 8, 9]
    assert {r.recorded_at for r in got} == {T0 + timedelta(minutes=m) for m in (1, 2)}
    assert [r.position async for r in log.read_time(since=T0 + timedelta(seconds=150))] == [
        10,
        11,
        12,
    ]
    assert [r.position async for r in log.read_time(until=T0)] == []
    assert await log.position_at(T0 + timedelta(hours=1)) == 13


@pytest.mark.asyncio
async def test_naive_times_are_refused(log: EventLog) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await log.position_at(T0.replace(tzinfo=None))


@pytest.mark.asyncio
async def test_a_missing_row_stops_the_read_instead_of_being_skipped(
    log: EventLog, log_path: Path, clock: Clock
) -> None:
    await _fill(log, clock, batches=2, size=5)
    await log.close()
    raw = sqlite3.connect(log_path)
    raw.execute("DROP TRIGGER events_append_only_delete")
    raw.execute("DELETE FROM events WHERE position = 6")
    raw.commit()
    raw.close()
    async with await EventLog.open(log_path, writer=False) as reader:
        seen: list[int] = []

        async def read_all() -> None:
            async for r in reader.read(chunk=3):
                seen.append(r.position)

        with pytest.raises(LogCorruptError, match="expected position 6, found 7"):
            await read_all()
        assert seen == [1, 2, 3, 4, 5]


@pytest.mark.asyncio
async def test_a_reader_follows_a_writer(log: EventLog, log_path: Path, clock: Clock) -> None:
    async with await EventLog.open(log_path, writer=False) as reader:
        assert (await reader.head()).position == 0
        await _fill(log, clock, batches=2, size=3)
        assert await reader.head() == await log.head()
        assert [r.id async for r in reader.read()] == [r.id async for r in log.read()]


# --- properties ---------------------------------------------------------------------------

# A small pool, so batches repeat events across and within themselves; few streams, so
# streams grow to several versions.
POOL = [new(membership(i % 4, f"list-{i}")) for i in range(12)]
batches_st = st.lists(
    st.lists(st.integers(0, len(POOL) - 1), min_size=0, max_size=8), min_size=1, max_size=6
)


async def _property(batches: list[list[int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with await EventLog.open(Path(tmp) / "p.db") as log:
            expected_order: list[str] = []
            for batch in batches:
                events: list[NewEvent] = [POOL[i] for i in batch]
                fresh = [e.id for e in dict.fromkeys(events) if e.id not in expected_order]
                result = await log.append(events)
                assert list(result.new_ids) == fresh
                assert set(result.duplicates) | set(fresh) == {e.id for e in events}
                expected_order += fresh

            rows = [r async for r in log.read(chunk=5)]
            assert [r.position for r in rows] == list(range(1, len(expected_order) + 1))
            assert [r.id for r in rows] == expected_order  # each id once, in append order
            versions: dict[str, int] = {}
            for r in rows:
                versions[r.stream] = versions.get(r.stream, 0) + 1
                assert r.version == versions[r.stream]
            report = await verify_log(log)
            assert report.ok, report.problems
            assert report.checked == len(expected_order)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches_st)
def test_any_sequence_of_batches_gives_a_gapless_verified_log(batches: list[list[int]]) -> None:
    asyncio.run(_property(batches))


@pytest.mark.parametrize("spaced", [False, True])
def test_a_batch_is_cut_down_to_the_wanted_commands_however_its_json_is_laid_out(
    spaced: bool,
) -> None:
    applied = [{"command_id": c, "detail": f"about {c}"} for c in ("c1", "c2", "c3")]
    payload = msgspec.json.encode({"store": "app", "key": "k", "applied": applied})
    if spaced:  # (not as ccsync writes it: every item is then read)
        payload = msgspec.json.format(payload, indent=2)
    cut = msgspec.json.decode(only_commands("command.applied", payload, ["c2"]))
    assert cut == {"store": "app", "key": "k", "applied": [applied[1]]}
    ids = msgspec.json.encode({"command_ids": ["c1", "c2", "c3"]})
    cut = msgspec.json.decode(only_commands("command.confirmed", ids, ["c3", "c1"]))
    assert cut == {"command_ids": ["c1", "c3"]}
