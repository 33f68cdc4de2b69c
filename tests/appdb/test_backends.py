"""Behaviour specific to the SQL backends: triggers, odd schemas, transactions, the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import asyncpg
import msgspec
import pytest
import pytest_asyncio

from adapters.appdb import AppDbConfig, create_sample_app, open_appdb, sample_config_toml
from engine.cli import main
from engine.commands import UpsertContact
from tests.appdb.harness import (
    PG_DSN,
    Harness,
    Mirror,
    SqlApp,
    opened_harness,
    pg_available,
)

PG = pytest.mark.postgres


@pytest_asyncio.fixture
async def pg_triggers(tmp_path: Path) -> AsyncIterator[Harness]:
    if not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    async with opened_harness("postgres", tmp_path, True) as h:
        yield h


@pytest.mark.asyncio
@pytest.mark.postgres
async def test_postgres_waits_for_a_slow_transaction_instead_of_skipping_it(
    pg_triggers: Harness,
) -> None:
    h = pg_triggers
    assert h.cfg is not None and h.cfg.schema
    mirror = Mirror()
    await mirror.sync(h.db)
    slow = await asyncpg.connect(PG_DSN, server_settings={"search_path": h.cfg.schema})
    try:
        tx = slow.transaction()
        await tx.start()
        # Takes its change-table sequence number first, but commits last.
        await slow.execute("UPDATE contacts SET first_name = 'Slow' WHERE id = 1")
        await h.app.update("2", first_name="Quick")
        await mirror.sync(h.db)
        # Reading the later commit now would move the checkpoint past the slow change.
        assert mirror.state["2"].fields["first_name"] != "Quick"
        await tx.commit()
    finally:
        await slow.close()
    await mirror.sync(h.db)
    assert mirror.state["1"].fields["first_name"] == "Slow"
    assert mirror.state["2"].fields["first_name"] == "Quick"


@pytest.mark.asyncio
@pytest.mark.postgres
async def test_postgres_a_bad_value_fails_its_own_command_only(pg_triggers: Harness) -> None:
    cmds = [
        UpsertContact(target="app", email="a@e.org", store_id="1", fields={"first_name": "Fine"}),
        UpsertContact(
            target="app", email="b@e.org", store_id="2", fields={"birthday_month": "May"}
        ),
        UpsertContact(target="app", email="c@e.org", store_id="3", fields={"birthday_month": "5"}),
    ]
    outcomes = await pg_triggers.db.apply(cmds)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert "May" in (outcomes[1].error or "")
    assert (await pg_triggers.app.live())["1"][1] == "Fine"


@pytest.mark.asyncio
async def test_triggers_ignore_columns_ccsync_does_not_map(tmp_path: Path) -> None:
    async with opened_harness("sqlite", tmp_path, True) as h:
        mirror = Mirror()
        await mirror.sync(h.db)
        await h.app.update("1", notes="internal only")
        pages = await mirror.sync(h.db)
        assert not [c for p in pages for c in p.contacts]


@pytest.mark.asyncio
async def test_switching_detection_mode_rescans_then_goes_on(tmp_path: Path) -> None:
    async with opened_harness("sqlite", tmp_path, False) as h:
        mirror = Mirror()
        await mirror.sync(h.db)
        await h.db.install_triggers()
        await h.db.install_triggers()  # idempotent
        assert h.db.change_detection == "changes"
        pages = await mirror.sync(h.db)
        assert pages and all(p.full_scan for p in pages)
        await h.app.delete("4")
        await mirror.sync(h.db)
        assert "4" not in mirror.state
        await h.db.uninstall_triggers()
        await h.db.uninstall_triggers()
        assert h.db.change_detection == "column"
        assert await h.db.driver.columns("ccsync_changes") is None
        assert all(p.full_scan for p in await mirror.sync(h.db))
        assert mirror.view() == await h.app.live()


_ODD_SCHEMA = """
CREATE TABLE people (
    ext_id TEXT,
    mail TEXT,
    given TEXT,
    subscribed INTEGER,
    touched TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
INSERT INTO people (ext_id, mail, given, subscribed) VALUES
    ('p-1', 'one@example.org', 'One', 1),
    (NULL, 'nokey@example.org', 'NoKey', 1),
    ('p-3', 'three@example.org', 'Three', 0),
    ('p-4', 'four@example.org', 'Four', NULL);
"""

_ODD_MAPPING = """
[appdb.contacts]
table = "people"
key = "ext_id"
email = "mail"
updated_at = "touched"
fields = { first_name = "given" }
permission = { column = "subscribed", kind = "boolean" }
"""


@pytest.mark.asyncio
async def test_text_keys_boolean_permission_and_null_keys(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    async with aiosqlite.connect(path) as conn:
        await conn.executescript(_ODD_SCHEMA)
    import tomllib

    doc = tomllib.loads(f'[appdb]\ndsn = "{path}"\ndelete_mode = "hard"\n' + _ODD_MAPPING)
    db = await open_appdb(AppDbConfig.from_toml(doc["appdb"]))
    try:
        mirror = Mirror()
        await mirror.sync(db)
        status = {k: r.permission.status for k, r in mirror.state.items()}
        assert status == {"p-1": "implicit", "p-3": "unsubscribed", "p-4": "not_set"}
        [nokey] = mirror.rejected
        assert (nokey.record, nokey.field, nokey.problem) == ("(null key)", "ext_id", "key is NULL")
        assert "nokey@example.org" in nokey.raw
        [made] = await db.apply(
            [UpsertContact(target="app", email="new@example.org", fields={"first_name": "N"})]
        )
        assert made.ok  # the app has no key default: the new row's key is NULL, reported later
    finally:
        await db.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=PG)])
async def test_fields_the_app_does_not_map_are_named_and_left_alone(
    backend: str, tmp_path: Path
) -> None:
    if backend == "postgres" and not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    async with opened_harness(backend, tmp_path, False) as h:
        odd = {"first_name": "Odd", "shoe_size": "44"}
        made, changed = await h.db.apply(
            [
                UpsertContact(target="app", email="odd@example.org", fields=odd),
                UpsertContact(target="app", email="x@example.org", store_id="2", fields=odd),
            ]
        )
        for outcome in (made, changed):
            assert outcome.ok and outcome.detail == "not mapped in the app, left alone: shoe_size"
        assert made.store_id
        live = await h.app.live()
        assert live[made.store_id] == ("odd@example.org", "Odd") and live["2"][1] == "Odd"


@pytest.mark.asyncio
async def test_a_new_contact_joins_its_lists_beside_a_leftover_membership(tmp_path: Path) -> None:
    # SQLite gives a new row the highest key + 1, so a deleted contact's key comes back; its
    # membership rows stay when the app does not enforce foreign keys (SQLite's default).
    async with opened_harness("sqlite", tmp_path, False) as h:
        (top,) = (await h.db.driver.fetch("SELECT max(id) FROM contacts"))[0]
        await h.db.driver.execute(
            "INSERT INTO list_members (contact_id, list_id) VALUES (?, 1)", (top + 1,)
        )
        [made] = await h.db.apply(
            [UpsertContact(target="app", email="back@example.org", fields={}, lists=("1", "2"))]
        )
        assert made.ok and made.store_id == str(top + 1)
        row = await h.app.row(made.store_id)
        assert row is not None and row["lists"] == ("1", "2")  # once each


@pytest.mark.asyncio
async def test_unknown_status_values_are_rejected_naming_the_column(tmp_path: Path) -> None:
    async with opened_harness("sqlite", tmp_path, True) as h:
        await h.app.update("3", email_status="bounced")
        mirror = Mirror()
        await mirror.sync(h.db)
        [bad] = mirror.rejected
        assert (bad.record, bad.field) == ("3", "email_status")
        assert "'bounced'" in bad.problem
        assert "3" not in mirror.state and len(mirror.state) == 11


def test_cli_check_install_and_uninstall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    asyncio.run(create_sample_app(str(tmp_path / "app.db"), contacts=5))
    config = tmp_path / "ccsync.toml"
    config.write_text(sample_config_toml("sqlite", "app.db"))  # relative to the config file
    assert main(["appdb", "check", "--config", str(config)]) == 0
    assert "change detection: column" in capsys.readouterr().out
    assert main(["appdb", "install-triggers", "--config", str(config)]) == 0
    assert main(["appdb", "check", "--config", str(config)]) == 0
    assert "change detection: changes" in capsys.readouterr().out
    assert main(["appdb", "uninstall-triggers", "--config", str(config)]) == 0
    config.write_text(sample_config_toml("sqlite", "app.db").replace('"company"', '"firm"'))
    assert main(["appdb", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "appdb.contacts.fields.company_name: column 'firm' not found in table 'contacts'" in err
    assert main(["appdb", "install-triggers", "--config", str(config)]) == 2
    assert "firm" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_sample_config_round_trips_through_toml(tmp_path: Path) -> None:
    cfg = await create_sample_app(str(tmp_path / "app.db"), contacts=2)
    assert cfg == msgspec.convert(msgspec.to_builtins(cfg), AppDbConfig)


@pytest.mark.asyncio
@pytest.mark.parametrize("triggers", [True, False], ids=["triggers", "column"])
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=PG)])
async def test_numbers_in_integer_columns_are_observed_as_their_text(
    backend: str, triggers: bool, tmp_path: Path
) -> None:
    # (PostgreSQL writes the text in the query, SQLite's values are converted in Python:
    # the engine sees the same fields either way, a zero included.)
    if backend == "postgres" and not await pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    async with opened_harness(backend, tmp_path, triggers) as h:
        mirror = Mirror()
        await mirror.sync(h.db)
        assert isinstance(h.app, SqlApp)
        await h.app.d.execute(
            "UPDATE contacts SET birthday_month = 0, birthday_day = -31, first_name = 'N', "
            f"updated_at = {h.app.now} WHERE id = 3"
        )
        await mirror.sync(h.db)
        fields = mirror.state["3"].fields
        assert (fields["birthday_month"], fields["birthday_day"]) == ("0", "-31")
        assert fields["first_name"] == "N"
