"""A transaction's writes queued and sent together (engine._pending), rows sent as JSON that
SQLite expands (json_rows / json_columns), and the WAL copied in the background
(engine._walcopy)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine._pending import bulk_op, json_statement
from engine._walcopy import COPY_AFTER_ROWS, WalCopier
from engine.errors import FatalError
from engine.log import EventLog, Recorded
from engine.logverify import verify_log
from projections.projector import Projector
from tests.log.samples import membership, new

_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_values, st.none() | st.binary(max_size=64), _values, st.binary(max_size=8)),
        max_size=20,
    )
)
def test_rows_sent_as_json_come_back_exactly_as_given(
    rows: list[tuple[object, bytes | None, object, bytes]],
) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, a, b BLOB, c, d BLOB, e)")
    op = bulk_op("INSERT INTO t (a, b, c, d, e) VALUES (?, ?, ?, ?, 'x')", rows, (1, 3))
    if rows:
        assert op is not None
        sql, params, many = op
        (db.executemany if many else db.execute)(sql, params)
    back = db.execute("SELECT a, b, c, d, e FROM t ORDER BY n").fetchall()
    assert back == [(*r, "x") for r in rows]


def test_json_form_of_an_upsert_keeps_its_literals_and_conflict_clause() -> None:
    sql = json_statement(
        "INSERT INTO t (k, s, v) VALUES (?, 'new', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        (1,),
    )
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, s TEXT, v BLOB)")
    db.execute("INSERT INTO t VALUES ('a', 'old', x'00')")
    assert bulk_op(sql, [], ()) is None  # nothing to send
    data = b'[["a", 1, 2], ["b", 3, 1]]'
    db.execute(sql, (data, b"xyz"))
    assert db.execute("SELECT k, s, v FROM t ORDER BY k").fetchall() == [
        ("a", "old", b"xy"),
        ("b", "new", b"z"),
    ]


def test_a_bulk_update_sets_each_keyed_row_and_the_last_row_for_a_key_wins() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)")
    db.executemany("INSERT INTO t VALUES (?, 0, NULL)", [("a",), ("b",), ("c",)])
    rows = [(1, b"x", "a"), (2, b"yy", "b"), (3, b"", "a")]
    op = bulk_op("UPDATE t SET n = ?, b = ? WHERE k = ?", rows, (1,))
    assert op is not None and not op[2]  # one statement, not executemany
    db.execute(op[0], op[1])
    assert db.execute("SELECT k, n, b FROM t ORDER BY k").fetchall() == [
        ("a", 3, b""),
        ("b", 2, b"yy"),
        ("c", 0, None),
    ]


@pytest.mark.asyncio
async def test_a_failing_queued_write_rolls_back_the_whole_transaction(log: EventLog) -> None:
    async def fails_at_commit() -> None:
        async with log.transaction() as tx:
            await tx.set_checkpoint("projection.x", "1")
            await tx.conn.execute("INSERT INTO no_such_table VALUES (1)")  # queued: no error

    with pytest.raises(FatalError, match="no such table"):
        await fails_at_commit()
    assert await log.checkpoint("projection.x") is None
    # The log goes on: the next transaction commits.
    async with log.transaction() as tx:
        await tx.set_checkpoint("projection.x", "2")
    assert await log.checkpoint("projection.x") == "2"


@pytest.mark.asyncio
async def test_a_fold_rolled_back_with_its_append_is_folded_again_later(log: EventLog) -> None:
    projector = Projector(log)
    await projector.start()
    failures = [RuntimeError("a consumer after the projector fails once")]

    async def flaky(_tx: object, _appended: object) -> None:
        if failures:
            raise failures.pop()

    log.add_consumer(flaky)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await log.append([new(membership(1, "a"))])
    assert await projector.position() == 0
    result = await log.append([new(membership(1, "b")), new(membership(2, "c"))])
    # The projector's fold of the rolled-back append was not taken as done: this one follows
    # position 0 and is folded in its own transaction.
    assert await projector.position() == result.new[-1].position == 2
    await projector.catch_up()
    rows = await log.connection.execute_fetchall("SELECT COUNT(*) FROM p_checkpoint")
    assert list(rows) == [(1,)]


@pytest.mark.asyncio
async def test_committed_reads_do_not_see_a_transaction_in_flight(log: EventLog) -> None:
    reader = await log.committed()
    async with log.transaction() as tx:
        await tx.set_checkpoint("p", "in flight")
        assert await log.checkpoint("p") == "in flight"  # the transaction's owner sees it
        rows = await reader.execute_fetchall("SELECT value FROM checkpoints WHERE name = 'p'")
        assert list(rows) == []
    rows = await reader.execute_fetchall("SELECT value FROM checkpoints WHERE name = 'p'")
    assert [tuple(r) for r in rows] == [("in flight",)]


def _write(path: Path, rows: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")  # only the copier checkpoints
    db.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO t VALUES (?)", ((b"x" * 100,) for _ in range(rows)))
    db.execute("COMMIT")
    return db


@asynccontextmanager
async def _copier(path: Path) -> AsyncIterator[tuple[WalCopier, list[sqlite3.Connection], int]]:
    """A copier on a new database at ``path`` whose WAL holds a few rows; the writers' own
    connections go in the list (left open: closing the last one would checkpoint the WAL);
    the size of the database file before any copy."""
    writers = [_write(path, 10)]
    copier = WalCopier(path)
    await copier.start()
    try:
        yield copier, writers, path.stat().st_size
    finally:
        await copier.close()
        for db in writers:
            db.close()


@pytest.mark.asyncio
async def test_the_wal_reaches_the_database_file_once_enough_is_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    async with _copier(path) as (copier, writers, empty):
        copier.committed(writers[0].total_changes)  # below the threshold: no checkpoint
        await copier.settled()
        assert path.stat().st_size == empty
        writers.append(_write(path, COPY_AFTER_ROWS))
        copier.committed(writers[-1].total_changes)
        await copier.settled()
        assert path.stat().st_size > COPY_AFTER_ROWS * 100


@pytest.mark.asyncio
async def test_a_copy_asked_for_at_the_end_of_a_cycle_is_done_by_close(tmp_path: Path) -> None:
    # (The cycle asks for it and returns; closing the log must not leave it half done.)
    path = tmp_path / "w.db"
    async with _copier(path) as (copier, writers, empty):
        writers.append(_write(path, 1000))  # far below the threshold of the copies on commit
        copier.copy_soon()
        copier.copy_soon()  # a second one waits for the first
        await copier.close()
        assert path.stat().st_size > empty + 1000 * 100


@pytest.mark.asyncio
async def test_a_cycle_of_appends_leaves_the_log_readable_after_background_copies(
    log: EventLog,
) -> None:
    appended: list[Recorded] = []
    for i in range(0, COPY_AFTER_ROWS + 500, 500):
        result = await log.append([new(membership(j, str(i))) for j in range(500)])
        appended += result.new
    await log.flush_wal()
    positions = [r.position async for r in log.read()]
    assert positions == [r.position for r in appended]
    report = await verify_log(log)  # the hash chain, positions, append-only triggers
    assert report.ok, report.problems


@pytest.mark.asyncio
async def test_two_first_uses_of_the_committed_reader_at_once_share_one_connection(
    log: EventLog,
) -> None:
    # (Both stores' observations ask for it at the same moment; a second connection would
    # be left open, and its thread would keep the process from exiting.)
    first, second = await asyncio.gather(log.committed(), log.committed())
    assert first is second
