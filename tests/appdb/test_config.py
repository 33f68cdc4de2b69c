"""The [appdb] mapping: shape errors name the key; schema errors name the column."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.appdb import AppDbConfig, create_sample_app, open_appdb, sample_config_toml
from engine.errors import ConfigError


def _doc() -> dict[str, Any]:
    return tomllib.loads(sample_config_toml("sqlite", "app.db"))["appdb"]


def test_sample_mapping_is_valid() -> None:
    cfg = AppDbConfig.from_toml(_doc())
    assert cfg.contacts.fields["cf:tier"] == "tier"
    assert cfg.contacts.permission is not None
    assert cfg.contacts.permission.app_value_for("unsubscribed") == "unsubscribed"


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (lambda d: d["contacts"].pop("email"), "appdb.contacts.email", "missing"),
        (
            lambda d: d["contacts"]["fields"].update(nickname="nick"),
            "appdb.contacts.fields.nickname",
            "unknown engine field",
        ),
        (lambda d: d["contacts"].update(key='id"; drop'), "appdb.contacts.key", "identifier"),
        (
            lambda d: d["contacts"]["permission"]["values"].update(gone="deleted"),
            "appdb.contacts.permission.values.gone",
            "unknown status",
        ),
        (lambda d: d.update(page_size=0), "appdb.page_size", "positive"),
        (lambda d: d.update(backend="oracle"), "appdb.backend", "oracle"),
        (
            lambda d: d["contacts"]["fields"].update(last_name="first_name"),
            "appdb.contacts.fields",
            "mapped twice",
        ),
        (
            lambda d: d["activities"].update(kind_values={"view": "v"}),
            "appdb.activities.kind_values.view",
            "unknown tracking kind",
        ),
    ],
)
def test_bad_mapping_names_the_key(mutate: Any, key: str, words: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(ConfigError) as err:
        AppDbConfig.from_toml(doc)
    assert err.value.key == key
    assert words in str(err.value)


def test_dsn_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = AppDbConfig.from_toml({**_doc(), "dsn": "", "dsn_env": "APPDB_TEST_DSN"})
    with pytest.raises(ConfigError) as err:
        cfg.resolved_dsn()
    assert err.value.key == "appdb.dsn_env"
    monkeypatch.setenv("APPDB_TEST_DSN", "/tmp/x.db")
    assert cfg.resolved_dsn() == "/tmp/x.db"


@pytest.mark.asyncio
async def test_a_missing_column_fails_at_start_naming_it(tmp_path: Path) -> None:
    cfg = await create_sample_app(str(tmp_path / "app.db"), contacts=3)
    fields = {**cfg.contacts.fields, "job_title": "position"}
    broken = msgspec.structs.replace(
        cfg, contacts=msgspec.structs.replace(cfg.contacts, fields=fields)
    )
    with pytest.raises(ConfigError) as err:
        await open_appdb(broken)
    assert err.value.key == "appdb.contacts.fields.job_title"
    assert "'position'" in str(err.value) and "'contacts'" in str(err.value)


@pytest.mark.asyncio
async def test_check_lists_every_mismatch(tmp_path: Path) -> None:
    cfg = await create_sample_app(str(tmp_path / "app.db"), contacts=3)
    doc = tomllib.loads(sample_config_toml("sqlite", str(tmp_path / "app.db")))["appdb"]
    doc["contacts"]["fields"]["job_title"] = "position"
    doc["memberships"]["table"] = "members"
    doc["contacts"]["permission"]["values"].pop("pending")
    db = await open_appdb(AppDbConfig.from_toml(doc), check_schema=False)
    try:
        problems = await db.check()
    finally:
        await db.close()
    assert any("appdb.contacts.fields.job_title" in p and "'position'" in p for p in problems)
    assert any("appdb.memberships.table" in p and "'members'" in p for p in problems)
    assert cfg.backend == "sqlite"


@pytest.mark.asyncio
async def test_check_reports_status_values_the_mapping_does_not_know(tmp_path: Path) -> None:
    await create_sample_app(str(tmp_path / "app.db"), contacts=20, seed=3)
    doc = tomllib.loads(sample_config_toml("sqlite", str(tmp_path / "app.db")))["appdb"]
    doc["contacts"]["permission"]["values"].pop("pending")
    db = await open_appdb(AppDbConfig.from_toml(doc))
    try:
        problems = await db.check()
    finally:
        await db.close()
    assert problems == [
        "appdb.contacts.permission.values: the app holds 'pending' in "
        "contacts.email_status, which is not mapped"
    ]
