"""Appending: atomic, gapless, idempotent, versioned per stream, append-only, one writer."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from engine.errors import (
    ConcurrencyError,
    FatalError,
    LogCorruptError,
    LogLockedError,
)
from engine.events import MembershipAdded, stream_of
from engine.log import EventLog, NewEvent, format_ts
from engine.logverify import verify_log
from tests.log.conftest import Clock
from tests.log.samples import every_event, membership, new

ROOT = Path(__file__).resolve().parents[2]


async def _all(log: EventLog) -> list[tuple[int, str, str, int]]:
    return [(r.position, r.id, r.stream, r.version) async for r in log.read()]


@pytest.mark.asyncio
async def test_batch_gets_gapless_positions_and_stream_versions(log: EventLog) -> None:
    first = await log.append([new(membership(1, "a")), new(membership(2, "a"))])
    second = await log.append([new(membership(1, "b")), new(membership(1, "c"))])

    assert [r.position for r in first.new + second.new] == [1, 2, 3, 4]
    assert [(r.stream, r.version) for r in second.new] == [
        ("app:contact:c1", 2),
        ("app:contact:c1", 3),
    ]
    assert [(p, s, v) for p, _, s, v in await _all(log)] == [
        (1, "app:contact:c1", 1),
        (2, "app:contact:c2", 1),
        (3, "app:contact:c1", 2),
        (4, "app:contact:c1", 3),
    ]
    assert [r.event.list_id for r in await log.read_stream("app:contact:c1")] == ["a", "b", "c"]  # type: ignore[attr-defined]
    assert (await log.head()).position == 4


@pytest.mark.asyncio
async def test_same_batch_twice_leaves_the_log_as_after_the_first(log: EventLog) -> None:
    batch = [new(e) for e in every_event()]
    first = await log.append(batch)
    head = await log.head()
    again = await log.append(batch)

    assert len(first.new) == len(batch) and first.duplicates == ()
    assert again.new == () and again.duplicates == tuple(e.id for e in batch)
    assert await log.head() == head
    assert len(await _all(log)) == len(batch)


@pytest.mark.asyncio
async def test_result_reports_which_events_were_new(log: EventLog) -> None:
    a, b, c = new(membership(1, "a")), new(membership(1, "b")), new(membership(2, "c"))
    await log.append([a, b])
    result = await log.append([b, c, c, a])  # c twice in one batch: stored once
    assert result.new_ids == (c.id,)
    assert result.duplicates == (b.id, a.id)
    assert [i for _, i, _, _ in await _all(log)] == [a.id, b.id, c.id]


@pytest.mark.asyncio
async def test_expected_version_conflict_appends_nothing(log: EventLog) -> None:
    await log.append([new(membership(1, "a")), new(membership(1, "b"))])
    head = await log.head()
    ok_event, late = new(membership(2, "x")), new(membership(1, "late"))

    with pytest.raises(ConcurrencyError) as caught:
        await log.append(
            [ok_event, late],
            expected={"app:contact:c1": 1, "app:contact:c2": 0},
            checkpoints={"fetcher": "page-9"},
        )
    assert caught.value.stream == "app:contact:c1"
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert "expected version 1, but the log is at 2" in str(caught.value)
    assert await log.head() == head
    assert await log.checkpoint("fetcher") is None

    result = await log.append([ok_event, late], expected={"app:contact:c1": 2})
    assert [r.version for r in result.new] == [1, 3]


@pytest.mark.asyncio
async def test_retrying_a_batch_that_committed_is_harmless(log: EventLog) -> None:
    batch = [new(membership(1, "a"))]
    await log.append(batch, expected={"app:contact:c1": 0})
    result = await log.append(batch, expected={"app:contact:c1": 0})  # e.g. after a timeout
    assert result.new == () and result.duplicates == (batch[0].id,)


@pytest.mark.asyncio
async def test_checkpoints_commit_with_the_events_or_not_at_all(log: EventLog) -> None:
    result = await log.append([new(membership(1))], checkpoints={"ctct.contacts": "2024-05-01"})
    assert await log.checkpoint("ctct.contacts") == "2024-05-01"
    value, position, _ = (await log.checkpoints())["ctct.contacts"]
    assert (value, position) == ("2024-05-01", result.new[0].position)

    class Boom(Exception):
        pass

    async def fails_midway() -> None:
        async with log.transaction() as tx:
            await tx.set_checkpoint("projection.contacts", "7")
            await tx.conn.execute("CREATE TABLE projection_rows (id INTEGER)")
            raise Boom

    with pytest.raises(Boom):
        await fails_midway()
    assert await log.checkpoint("projection.contacts") is None
    tables = await log.connection.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE name = 'projection_rows'"
    )
    assert list(tables) == []

    async with log.transaction() as tx:
        await tx.conn.execute("CREATE TABLE projection_rows (id INTEGER)")
        await tx.set_checkpoint("projection.contacts", "1", position=1)
    assert (await log.checkpoints())["projection.contacts"][:2] == ("1", 1)


@pytest.mark.asyncio
async def test_a_checkpoint_is_dated_by_the_logs_clock(log: EventLog, clock: Clock) -> None:
    """`ccsync status` shows when each checkpoint last moved beside the events' times: both
    from the log's clock (a simulated one in benchmarks), not one from the machine's."""
    clock.advance(days=400)
    await log.append([new(membership(1))], checkpoints={"ctct.contacts": "a"})
    async with log.transaction() as tx:
        await tx.set_checkpoint("projection.contacts", "1", position=1)
    updated = {name: at for name, (_, _, at) in (await log.checkpoints()).items()}
    stamp = format_ts(clock.now)
    assert updated == {"ctct.contacts": stamp, "projection.contacts": stamp}


@pytest.mark.asyncio
async def test_readers_never_see_an_uncommitted_write(log: EventLog) -> None:
    entered, proceed = asyncio.Event(), asyncio.Event()

    async def consumer_that_fails() -> None:
        async with log.transaction() as tx:
            await tx.set_checkpoint("p", "uncommitted")
            # Inside its own transaction a consumer reads its own writes.
            assert await log.checkpoint("p") == "uncommitted"
            entered.set()
            await proceed.wait()
            raise RuntimeError("projection crashed")

    writer = asyncio.create_task(consumer_that_fails())
    await entered.wait()
    reader = asyncio.create_task(log.checkpoint("p"))
    proceed.set()
    with pytest.raises(RuntimeError):
        await writer
    assert await reader is None


@pytest.mark.asyncio
async def test_append_inside_a_transaction_is_refused_not_deadlocked(log: EventLog) -> None:
    with pytest.raises(FatalError, match="inside transaction"):
        async with log.transaction():
            await log.append([new(membership(1))])
    assert (await log.head()).position == 0


@pytest.mark.asyncio
async def test_recorded_at_never_goes_back_when_the_clock_does(log: EventLog, clock: Clock) -> None:
    first = await log.append([new(membership(1, "a"))])
    clock.advance(hours=-1)
    second = await log.append([new(membership(1, "b"))])
    assert second.new[0].recorded_at == first.new[0].recorded_at
    assert (await verify_log(log)).ok


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("UPDATE events SET payload = x'7b7d' WHERE position = 1", "UPDATE refused"),
        ("DELETE FROM events WHERE position = 2", "DELETE refused"),
        ("DELETE FROM events", "DELETE refused"),
    ],
)
async def test_a_stray_sql_client_cannot_rewrite_history(
    log: EventLog, log_path: Path, sql: str, refused: str
) -> None:
    await log.append([new(membership(1, "a")), new(membership(2, "b"))])
    stray = sqlite3.connect(log_path, timeout=5)
    with pytest.raises(sqlite3.IntegrityError, match=f"append-only; {refused}"):
        stray.execute(sql)
    stray.close()
    assert len(await _all(log)) == 2
    assert (await verify_log(log)).ok


@pytest.mark.asyncio
async def test_log_and_wal_files_are_private(log: EventLog, log_path: Path) -> None:
    await log.append([new(membership(1))])
    for p in (log_path, Path(f"{log_path}-wal"), Path(f"{log_path}.lock")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


@pytest.mark.asyncio
async def test_read_only_log_refuses_writes(log: EventLog, log_path: Path) -> None:
    await log.append([new(membership(1))])
    async with await EventLog.open(log_path, writer=False) as reader:
        with pytest.raises(FatalError, match="read-only"):
            await reader.append([new(membership(2))])


@pytest.mark.asyncio
async def test_a_second_writer_in_this_process_is_refused(log: EventLog, log_path: Path) -> None:
    with pytest.raises(LogLockedError, match=f"pid {os.getpid()}"):
        await EventLog.open(log_path)


@pytest.mark.asyncio
async def test_not_a_log_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(LogCorruptError, match=f"event log {junk}"):
        await EventLog.open(junk)
    with pytest.raises(FatalError, match="no event log at"):
        await EventLog.open(tmp_path / "missing.db", writer=False)
    async with await EventLog.open(junk.with_name("fresh.db")):
        pass  # the lock of the failed open was released: others can open logs


def _start_holder(log_path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.log._child", "hold", str(log_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.asyncio
async def test_second_writer_process_is_told_who_holds_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    child = _start_holder(path)
    try:
        with pytest.raises(LogLockedError) as caught:
            await EventLog.open(path)
        assert f"pid {child.pid}" in str(caught.value)
        assert "only one writer" in str(caught.value)

        # Readers work beside the writer, and see what it committed.
        async with await EventLog.open(path, writer=False) as reader:
            assert [r.stream async for r in reader.read()] == ["app:contact:c0"]
            assert (await verify_log(reader)).ok
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=30) == 0
        assert child.stdout is not None
        child.stdout.close()

    async with await EventLog.open(path) as log:  # free again once the holder exits
        result = await log.append([new(membership(0, "again"))])
        assert [(r.position, r.stream, r.version) for r in result.new] == [
            (2, stream_of(membership(0)), 2)
        ]


@pytest.mark.asyncio
async def test_a_batch_larger_than_sqlites_parameter_limit(log: EventLog) -> None:
    batch = [new(membership(i % 1200, f"l{i}")) for i in range(2500)]
    first = await log.append(batch[:1000])
    result = await log.append(batch)  # 1,000 known ids and 1,200 streams: looked up in chunks
    assert len(first.new) == 1000
    assert len(result.new) == 1500 and len(result.duplicates) == 1000
    assert result.new[-1].position == 2500
    assert [r.version for r in await log.read_stream("app:contact:c5")] == [1, 2, 3]


@pytest.mark.asyncio
async def test_keys_and_ids_holding_a_nul_character_are_versioned_and_deduplicated(
    log: EventLog,
) -> None:
    # An app's key column may hold any text. SQLite's JSON functions cut text at a NUL, so a
    # lookup through json_each alone missed such a stream (its second event took version 1
    # again and the append was refused) and such an id (appended twice).
    odd = MembershipAdded(store="app", key="c\x00x", list_id="a")  # type: ignore[arg-type]
    first = await log.append([NewEvent("id\x00one", odd), new(membership(1, "a"))])
    again = await log.append([NewEvent("id\x00one", odd)])
    later = await log.append([new(msgspec.structs.replace(odd, list_id="b"))])
    assert len(first.new) == 2
    assert again.new == () and again.duplicates == ("id\x00one",)
    assert [(r.stream, r.version) for r in later.new] == [("app:contact:c\x00x", 2)]
    assert [r.version for r in await log.read_stream("app:contact:c\x00x")] == [1, 2]


@pytest.mark.asyncio
async def test_a_log_of_another_format_is_refused(log: EventLog, log_path: Path) -> None:
    await log.close()
    raw = sqlite3.connect(log_path)
    raw.execute("UPDATE log_meta SET value = '2' WHERE key = 'format'")
    raw.commit()
    raw.close()
    with pytest.raises(FatalError, match="has log format 2; this build reads format 1"):
        await EventLog.open(log_path, writer=False)


@pytest.mark.asyncio
async def test_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log's directory should be")
    with pytest.raises(FatalError, match=r"cannot open the event log .* for writing"):
        await EventLog.open(blocker / "events.db")
