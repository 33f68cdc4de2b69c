"""The bulk write primitives and the updated-at stamp: what the fast paths must keep exact.

PostgreSQL sends a batch's column as one U+001F-separated text (NULL as U+001E), falling back
to a text array for values holding either character; upserts stamp the updated-at column in
their own write; a batch keyed on an indexed column is joined through the index, only inside
the ``keyed`` block.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from adapters.appdb._postgres import PostgresDriver
from engine.commands import UpsertContact
from engine.errors import FatalError
from tests.appdb.harness import PG_DSN, drop_schema, opened_harness, pg_available

pytestmark = pytest.mark.asyncio

_TABLES = """
CREATE TABLE by_int (id bigint PRIMARY KEY, name text, n smallint, at timestamptz);
CREATE TABLE by_text (code text PRIMARY KEY, name text, n integer);
CREATE TABLE by_uuid (ref uuid, name text);
INSERT INTO by_int VALUES (1, 'one', 1, NULL), (2, 'two', 2, NULL), (3, 'three', 3, NULL);
INSERT INTO by_text VALUES ('a', 'A', 1), ('b', 'B', 2);
"""


@pytest_asyncio.fixture
async def pg() -> AsyncIterator[PostgresDriver]:
    if not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    d = await PostgresDriver.connect(PG_DSN, schema)
    try:
        await d.executescript(_TABLES)
        for table in ("by_int", "by_text", "by_uuid"):
            await d.columns(table)
        yield d
    finally:
        await d.close()
        await drop_schema(schema)


async def _rows(d: PostgresDriver, sql: str) -> list[tuple[Any, ...]]:
    return await d.fetch(sql)


@pytest.mark.postgres
async def test_pg_update_rows_writes_nulls_empty_texts_and_control_characters(
    pg: PostgresDriver,
) -> None:
    async with pg.transaction(mark_writer=True):
        changed = await pg.update_rows(
            "by_int",
            "id",
            ("name", "n"),
            [("1", None, "7"), ("2", "", None), ("3", "tab\tsep\x1fnull\x1e", "9")],
        )
    assert changed == 3
    assert await _rows(pg, "SELECT id, name, n FROM by_int ORDER BY id") == [
        (1, None, 7),
        (2, "", None),
        (3, "tab\tsep\x1fnull\x1e", 9),
    ]
    # Without control characters the column travels as one text: NULL and '' still differ.
    async with pg.transaction(mark_writer=True):
        changed = await pg.update_rows(
            "by_int", "id", ("name",), [("1", ""), ("2", None), ("3", "trois")]
        )
    assert changed == 3
    assert await _rows(pg, "SELECT name FROM by_int ORDER BY id") == [("",), (None,), ("trois",)]


@pytest.mark.postgres
async def test_pg_one_row_holding_an_empty_text_is_not_an_empty_batch(pg: PostgresDriver) -> None:
    # string_to_array('') is an empty array: a single empty value must still be written.
    async with pg.transaction(mark_writer=True):
        assert await pg.update_rows("by_text", "code", ("name",), [("a", "")]) == 1
    assert await _rows(pg, "SELECT name FROM by_text WHERE code = 'a'") == [("",)]


@pytest.mark.postgres
async def test_pg_update_rows_skips_rows_holding_the_values_and_stamps_the_rest(
    pg: PostgresDriver,
) -> None:
    at = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    async with pg.transaction(mark_writer=True), pg.keyed("by_text", "code"):
        changed = await pg.update_rows(
            "by_text", "code", ("name", "n"), [("a", "A", "1"), ("b", "Bee", "2")]
        )
    assert changed == 1
    async with pg.transaction(mark_writer=True), pg.keyed("by_int", "id"):
        changed = await pg.update_rows(
            "by_int", "id", ("name",), [("1", "one"), ("2", "deux")], ("at", at)
        )
    assert changed == 1
    assert await _rows(pg, "SELECT id, name, at FROM by_int WHERE id < 3 ORDER BY id") == [
        (1, "one", None),  # already held the value: not written, not stamped
        (2, "deux", at),
    ]
    assert await _rows(pg, "SELECT code, name FROM by_text ORDER BY code") == [
        ("a", "A"),
        ("b", "Bee"),
    ]


@pytest.mark.postgres
async def test_pg_keys_of_another_type_are_cast_to_the_key_column(pg: PostgresDriver) -> None:
    ref = str(uuid.uuid4())
    async with pg.transaction(mark_writer=True):
        made = await pg.insert_rows("by_uuid", ("ref", "name"), [(ref, "u")], ("ref", "name"))
        assert [(str(r), n) for r, n in made] == [(ref, "u")]
        assert await pg.update_rows("by_uuid", "ref", ("name",), [(ref, "v")]) == 1
    assert await _rows(pg, "SELECT ref::text, name FROM by_uuid") == [(ref, "v")]


@pytest.mark.postgres
async def test_pg_insert_rows_returns_keys_and_converts_every_type(pg: PostgresDriver) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with pg.transaction(mark_writer=True):
        made = await pg.insert_rows(
            "by_int",
            ("id", "name", "n", "at"),
            [(10, "ten", "10", at), (11, None, None, at), (12, "x\x1fy", 12, at)],
            ("id", "name"),
        )
    assert sorted(made) == [(10, "ten"), (11, None), (12, "x\x1fy")]
    assert await _rows(pg, "SELECT id, n, at FROM by_int WHERE id >= 10 ORDER BY id") == [
        (10, 10, at),
        (11, None, at),
        (12, 12, at),
    ]


@pytest.mark.postgres
async def test_pg_a_failure_mid_batch_rolls_the_whole_batch_back(pg: PostgresDriver) -> None:
    async def batch() -> None:
        async with pg.transaction(mark_writer=True), pg.keyed("by_int", "id"):
            await pg.update_rows("by_int", "id", ("name",), [("1", "changed")])
            await pg.update_rows("by_int", "id", ("n",), [("2", "99999999")])  # not a smallint

    with pytest.raises(FatalError, match=r"out of range"):
        await batch()
    assert await _rows(pg, "SELECT name, n FROM by_int WHERE id IN (1, 2) ORDER BY id") == [
        ("one", 1),
        ("two", 2),
    ]
    # The planner settings of the failed block went with its transaction.
    assert await _rows(pg, "SHOW enable_hashjoin") == [("on",)]


@pytest.mark.postgres
async def test_pg_keyed_joins_through_the_index_only_inside_the_block(pg: PostgresDriver) -> None:
    async with pg.transaction(mark_writer=True):
        async with pg.keyed("by_int", "id"):
            assert await _rows(pg, "SHOW enable_hashjoin") == [("off",)]
        assert await _rows(pg, "SHOW enable_hashjoin") == [("on",)]
        async with pg.keyed("by_uuid", "ref"):  # no index on the key: nothing changes
            assert await _rows(pg, "SHOW enable_hashjoin") == [("on",)]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_upserts_stamp_updated_at_only_on_rows_they_change(
    backend: str, tmp_path: Path
) -> None:
    if backend == "postgres" and not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    async with opened_harness(backend, tmp_path, False) as h:
        d = h.db.driver
        await d.execute("UPDATE contacts SET updated_at = ?", (d.time_param(datetime(2020, 1, 1)),))
        before = {str(k): v for k, v in await d.fetch("SELECT id, updated_at FROM contacts")}
        same = await d.fetch("SELECT first_name FROM contacts WHERE id = 2")
        outcomes = await h.db.apply(
            [
                UpsertContact(
                    target="app", email="x@e.org", store_id="1", fields={"first_name": "Changed"}
                ),
                UpsertContact(
                    target="app", email="x@e.org", store_id="2", fields={"first_name": same[0][0]}
                ),
                UpsertContact(target="app", email="new@e.org", fields={"first_name": "New"}),
            ]
        )
        assert all(o.ok for o in outcomes)
        after = {str(k): v for k, v in await d.fetch("SELECT id, updated_at FROM contacts")}
        new_key = outcomes[2].store_id
        assert new_key is not None
        assert after["1"] > before["1"]  # changed: stamped in the same write
        assert after["2"] == before["2"]  # already held the value: untouched
        assert after[new_key] > before["1"]  # created now
        assert {k for k in after if after[k] != before.get(k)} == {"1", new_key}


@pytest.mark.postgres
async def test_a_field_mapped_onto_the_updated_at_column_is_still_written() -> None:
    # The stamp must not be a second assignment of the same column (PostgreSQL refuses one).
    if not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import tomllib

    from adapters.appdb import AppDbConfig, create_sample_app, open_appdb, sample_config_toml

    schema = "t_" + uuid.uuid4().hex[:12]
    await create_sample_app(PG_DSN, contacts=3, seed=7, schema=schema)
    text = sample_config_toml("postgres", PG_DSN, schema).replace(
        '"cf:tier" = "tier"', '"cf:tier" = "tier"\n"cf:touched" = "updated_at"'
    )
    db = await open_appdb(AppDbConfig.from_toml(tomllib.loads(text)["appdb"]))
    try:
        [outcome] = await db.apply(
            [
                UpsertContact(
                    target="app",
                    email="x@e.org",
                    store_id="1",
                    fields={"first_name": "Z", "cf:touched": "2020-01-01T00:00:00+00:00"},
                )
            ]
        )
        assert outcome.ok, outcome.error
        [(first, at)] = await db.driver.fetch(
            "SELECT first_name, updated_at FROM contacts WHERE id = 1"
        )
        assert first == "Z" and at > datetime(2021, 1, 1, tzinfo=UTC)  # moved by the batch
    finally:
        await db.close()
        await drop_schema(schema)
