"""The sample application: a small CRM (contacts, lists, memberships, activities).

The demo and the tests create it on either backend with ``create_sample_app``;
``sample_config`` (and ``sample_config_toml``) is the mapping of its schema, a worked example
of every section of docs/appdb.md. ``notes`` and ``created_at`` are deliberately not mapped:
ccsync must never touch them.
"""

from __future__ import annotations

import random
import sqlite3
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import aiosqlite
import asyncpg

from adapters.appdb._driver import quote
from adapters.appdb._sample_schema import MAPPING, SAMPLE_SCHEMA_POSTGRES, SAMPLE_SCHEMA_SQLITE
from adapters.appdb._sqlite import sqlite_time
from adapters.appdb.config import AppDbConfig

__all__ = [
    "SAMPLE_SCHEMA_POSTGRES",
    "SAMPLE_SCHEMA_SQLITE",
    "change_sample_app",
    "create_sample_app",
    "sample_config",
    "sample_config_toml",
]

DEFAULT_LISTS: Final = ("Newsletter", "Customers", "Events")
_FIRST: Final = ("Ann", "Bob", "Chloé", "Dev", "Eve", "Femi", "Grace", "Hiro", "Ines", "José")
_LAST: Final = ("Smith", "Okafor", "Müller", "Tanaka", "García", "Nguyen", "Rossi", "Khan")
_CITIES: Final = (("Boston", "US"), ("Lyon", "FR"), ("Osaka", "JP"), ("Lagos", "NG"))
_STATUSES: Final = ("active",) * 7 + ("implied", "pending", "unsubscribed")


def sample_config_toml(
    backend: Literal["sqlite", "postgres"], dsn: str, schema: str | None = None
) -> str:
    """The ``[appdb]`` TOML section mapping the sample schema."""
    head = f"[appdb]\nbackend = {backend!r}\ndsn = {_toml_str(dsn)}\n"
    if schema:
        head += f"schema = {schema!r}\n"
    return head + MAPPING


def sample_config(
    backend: Literal["sqlite", "postgres"], dsn: str, schema: str | None = None
) -> AppDbConfig:
    """The AppDbConfig mapping the sample schema."""
    doc = tomllib.loads(sample_config_toml(backend, dsn, schema))
    return AppDbConfig.from_toml(doc["appdb"])


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sample_rows(
    n: int, seed: int, start: int = 1, when: datetime | None = None
) -> list[tuple[object, ...]]:
    """``n`` deterministic contact rows: (id, email, first, last, company, job, phone, mobile,
    city, country, birthday_month, birthday_day, tier, email_status, updated_at)."""
    rng = random.Random(seed)
    when = when or datetime.now(UTC) - timedelta(hours=1)
    out: list[tuple[object, ...]] = []
    for i in range(start, start + n):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        city, country = rng.choice(_CITIES)
        out.append(
            (
                i,
                f"{first.lower()}.{last.lower()}.{i}@example.org",
                first,
                last,
                f"Firm {rng.randrange(500)}",
                rng.choice(("CEO", "Engineer", "Buyer", None)),
                f"+1 555 {rng.randrange(10**7):07d}",
                None,
                city,
                country,
                rng.randrange(1, 13),
                rng.randrange(1, 29),
                rng.choice(("gold", "silver", None)),
                rng.choice(_STATUSES),
                when + timedelta(microseconds=i * 1000),
            )
        )
    return out


_CONTACT_COLS: Final = (
    "id", "email", "first_name", "last_name", "company", "job_title", "phone", "mobile",
    "city", "country", "birthday_month", "birthday_day", "tier", "email_status", "updated_at",
)  # fmt: skip


async def create_sample_app(
    cfg_or_dsn: AppDbConfig | str,
    *,
    contacts: int = 100,
    seed: int = 0,
    lists: tuple[str, ...] | list[str] = DEFAULT_LISTS,
    schema: str | None = None,
) -> AppDbConfig:
    """Create the sample CRM with ``contacts`` deterministic contacts; returns its mapping.

    ``cfg_or_dsn``: an AppDbConfig, a PostgreSQL DSN (``postgresql://...``) or a SQLite path
    (the file is created). ``schema`` (PostgreSQL) is created if missing.
    """
    if isinstance(cfg_or_dsn, AppDbConfig):
        backend, dsn = cfg_or_dsn.backend, cfg_or_dsn.resolved_dsn()
        schema = schema or cfg_or_dsn.schema
    else:
        dsn = cfg_or_dsn
        backend = "postgres" if dsn.startswith(("postgres://", "postgresql://")) else "sqlite"
    rng = random.Random(seed + 1)
    rows = sample_rows(contacts, seed)
    members = [(row[0], j + 1) for row in rows for j in range(len(lists)) if rng.random() < 0.4]
    acts = (
        [
            (row[0], f"camp-{k}", f"Campaign {k}", "send", rows[0][14])
            for row in rows[: max(1, contacts // 10)]
            for k in range(2)
        ]
        if rows
        else []
    )
    if backend == "postgres":
        await _create_pg(dsn, schema, rows, list(lists), members, acts)
    else:
        await _create_sqlite(dsn, rows, list(lists), members, acts)
    return sample_config(backend, dsn, schema)


async def _create_sqlite(
    path: str,
    rows: list[tuple[object, ...]],
    lists: list[str],
    members: Sequence[tuple[object, ...]],
    acts: Sequence[tuple[object, ...]],
) -> None:
    async with aiosqlite.connect(path) as conn:
        await conn.executescript(SAMPLE_SCHEMA_SQLITE)
        await conn.executemany(
            "INSERT INTO lists (id, name, description) VALUES (?, ?, ?)",
            [(i + 1, name, f"The {name} list") for i, name in enumerate(lists)],
        )
        marks = ", ".join("?" * len(_CONTACT_COLS))
        await conn.executemany(
            f"INSERT INTO contacts ({', '.join(_CONTACT_COLS)}) VALUES ({marks})",
            [(*r[:-1], sqlite_time(r[-1])) for r in rows],  # type: ignore[arg-type]
        )
        await conn.executemany(
            "INSERT INTO list_members (contact_id, list_id) VALUES (?, ?)", members
        )
        await conn.executemany(
            "INSERT INTO activities (contact_id, campaign_activity_id, campaign_name, kind, "
            "occurred_at) VALUES (?, ?, ?, ?, ?)",
            [(*a[:-1], sqlite_time(a[-1])) for a in acts],  # type: ignore[arg-type]
        )
        await conn.commit()


async def _create_pg(
    dsn: str,
    schema: str | None,
    rows: list[tuple[object, ...]],
    lists: list[str],
    members: Sequence[tuple[object, ...]],
    acts: Sequence[tuple[object, ...]],
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if schema:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            await conn.execute(f"SET search_path TO {quote(schema)}")
        async with conn.transaction():
            await conn.execute(SAMPLE_SCHEMA_POSTGRES)
            await conn.copy_records_to_table(
                "lists",
                records=[(i + 1, name, f"The {name} list") for i, name in enumerate(lists)],
                columns=("id", "name", "description"),
                schema_name=schema,
            )
            await conn.copy_records_to_table(
                "contacts", records=rows, columns=_CONTACT_COLS, schema_name=schema
            )
            await conn.copy_records_to_table(
                "list_members",
                records=members,
                columns=("contact_id", "list_id"),
                schema_name=schema,
            )
            await conn.copy_records_to_table(
                "activities",
                records=acts,
                columns=(
                    "contact_id",
                    "campaign_activity_id",
                    "campaign_name",
                    "kind",
                    "occurred_at",
                ),
                schema_name=schema,
            )
            # Explicit ids were copied in: move the identities past them.
            for table in ("lists", "contacts"):
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
    finally:
        await conn.close()


def change_sample_app(
    db: str | Path, rng: random.Random, tag: str, count: int = 8, at: datetime | None = None
) -> None:
    """``count`` contacts of a SQLite sample app changed as a CRM's users would: renamed,
    re-addressed, opted out, put on a list or taken off every list; or a new contact entered.
    ``tag`` (unique per call) goes into the new names and addresses; ``at`` is the time the
    changes are stamped with (default: the machine's)."""
    now = sqlite_time(at or datetime.now(UTC))
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM contacts WHERE deleted_at IS NULL")]
        lists = [r[0] for r in conn.execute("SELECT id FROM lists")]
        for key in rng.sample(ids, min(count, len(ids))):
            match rng.randrange(6):
                case 0:
                    conn.execute(
                        "UPDATE contacts SET first_name = ? WHERE id = ?", (f"R{tag}", key)
                    )
                case 1:
                    conn.execute(
                        "UPDATE contacts SET email_status = 'unsubscribed', "
                        "unsubscribe_reason = 'asked', status_changed_at = ? WHERE id = ?",
                        (now, key),
                    )
                case 2:
                    conn.execute(
                        "UPDATE contacts SET email = ? || email WHERE id = ?", (f"r{tag}.", key)
                    )
                case 3:
                    conn.execute(
                        "INSERT OR IGNORE INTO list_members (contact_id, list_id) VALUES (?, ?)",
                        (key, rng.choice(lists)),
                    )
                case 4:
                    conn.execute("DELETE FROM list_members WHERE contact_id = ?", (key,))
                case _:
                    conn.execute(
                        "INSERT INTO contacts (email, first_name, created_at, updated_at) "
                        "VALUES (?, 'New', ?, ?)",
                        (f"new.{tag}.{key}@example.org", now, now),
                    )
                    continue
            conn.execute("UPDATE contacts SET updated_at = ? WHERE id = ?", (now, key))
