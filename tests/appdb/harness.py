"""Test harness: one port object per backend, the application writing its own rows beside it,
and a ``Mirror`` that folds observed pages the way the engine does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import msgspec

from adapters.appdb import AppDatabase, AppDbConfig, create_sample_app, open_appdb
from adapters.appdb._driver import Driver, as_text
from adapters.appdb._postgres import PostgresDriver
from adapters.appdb._sqlite import SqliteDriver
from adapters.appdb.fake import FakeAppDatabase
from adapters.appdb.sample import sample_rows
from engine.model import ContactRecord, normalise_email
from engine.ports import Page, Rejected

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SAMPLE_SIZE = 12
PAGE = 5


class AppSide(Protocol):
    """The application itself writing and reading its own rows (not through ccsync)."""

    async def insert(self, email: str, first_name: str = "New") -> str: ...
    async def update(self, key: str, **cols: str | None) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def row(self, key: str) -> dict[str, Any] | None: ...
    async def live(self) -> dict[str, tuple[str, str | None]]: ...
    async def activities(self) -> int: ...
    async def close(self) -> None: ...


class FakeApp:
    """AppSide over FakeAppDatabase's app_* methods."""

    def __init__(self, fake: FakeAppDatabase) -> None:
        self.fake = fake

    async def insert(self, email: str, first_name: str = "New") -> str:
        return self.fake.app_insert(email, first_name=first_name)

    async def update(self, key: str, **cols: str | None) -> None:
        email = cols.pop("email", None)
        if "notes" in cols:
            self.fake.contacts[key].notes = cols.pop("notes")
        self.fake.app_update(key, email=email, **cols)

    async def delete(self, key: str) -> None:
        self.fake.app_delete(key)

    async def row(self, key: str) -> dict[str, Any] | None:
        c = self.fake.contacts.get(key)
        if c is None:
            return None
        return {
            "email": c.email,
            "first_name": c.fields.get("first_name"),
            "last_name": c.fields.get("last_name"),
            "notes": c.notes,
            "unsubscribed": c.status == "unsubscribed",
            "reason": c.reason,
            "deleted": c.deleted,
            "lists": tuple(sorted(self.fake.members.get(key, ()))),
        }

    async def live(self) -> dict[str, tuple[str, str | None]]:
        return {
            k: (normalise_email(c.email), c.fields.get("first_name"))
            for k, c in self.fake.contacts.items()
            if not c.deleted
        }

    async def activities(self) -> int:
        return len(self.fake.activities)

    async def close(self) -> None:
        pass


class SqlApp:
    """AppSide over its own connection to the sample schema, as the application would."""

    def __init__(self, d: Driver) -> None:
        self.d = d
        pg = d.dialect == "postgres"
        self.now = "now()" if pg else "strftime('%Y-%m-%d %H:%M:%f', 'now')"

    async def insert(self, email: str, first_name: str = "New") -> str:
        rows = await self.d.fetch(
            "INSERT INTO contacts (email, first_name) VALUES (?, ?) RETURNING id",
            (email, first_name),
        )
        return str(rows[0][0])

    async def update(self, key: str, **cols: str | None) -> None:
        sets = ", ".join(f"{c} = ?" for c in cols)
        await self.d.execute(
            f"UPDATE contacts SET {sets}, updated_at = {self.now} WHERE id = ?",
            (*cols.values(), int(key)),
        )

    async def delete(self, key: str) -> None:
        await self.d.execute("DELETE FROM contacts WHERE id = ?", (int(key),))

    async def row(self, key: str) -> dict[str, Any] | None:
        rows = await self.d.fetch(
            "SELECT email, first_name, last_name, notes, email_status, unsubscribe_reason, "
            "deleted_at FROM contacts WHERE id = ?",
            (int(key),),
        )
        if not rows:
            return None
        email, first, last, notes, status, reason, deleted = rows[0]
        lists = await self.d.fetch(
            "SELECT list_id FROM list_members WHERE contact_id = ? ORDER BY list_id", (int(key),)
        )
        return {
            "email": email,
            "first_name": first,
            "last_name": last,
            "notes": notes,
            "unsubscribed": status == "unsubscribed",
            "reason": reason,
            "deleted": deleted is not None,
            "lists": tuple(str(r[0]) for r in lists),
        }

    async def live(self) -> dict[str, tuple[str, str | None]]:
        rows = await self.d.fetch(
            "SELECT id, email, first_name FROM contacts WHERE deleted_at IS NULL"
        )
        return {str(k): (normalise_email(e), f) for k, e, f in rows}

    async def activities(self) -> int:
        return int((await self.d.fetch("SELECT count(*) FROM activities"))[0][0])

    async def close(self) -> None:
        await self.d.close()


@dataclass
class Mirror:
    """The engine's view of the app store, folded from observed pages."""

    state: dict[str, ContactRecord] = field(default_factory=dict)
    token: str | None = None
    rejected: list[Rejected] = field(default_factory=list)

    def fold(self, page: Page, scanned: set[str] | None) -> None:
        for rec in page.contacts:
            if rec.deleted:
                self.state.pop(rec.store_id, None)
            else:
                self.state[rec.store_id] = rec
            if scanned is not None:
                scanned.add(rec.store_id)
        self.rejected.extend(page.rejected)
        self.token = page.resume

    async def sync(self, db: Any, bound: datetime | None = None) -> list[Page]:
        """One observation run: returns its pages."""
        pages: list[Page] = []
        scanned: set[str] | None = None
        async for page in db.observe_contacts(self.token, bound or datetime.now(UTC)):
            if page.full_scan and scanned is None:
                scanned = set()
            self.fold(page, scanned if page.full_scan else None)
            pages.append(page)
        if scanned is not None:
            for key in [k for k in self.state if k not in scanned]:
                del self.state[key]
        return pages

    def view(self) -> dict[str, tuple[str, str | None]]:
        return {k: (r.email, r.fields.get("first_name")) for k, r in self.state.items()}


@dataclass
class Harness:
    """One backend under test."""

    name: str
    db: Any  # AppDatabase or FakeAppDatabase
    app: AppSide
    cfg: AppDbConfig | None = None
    column_mode: bool = False

    async def catch_up(self, mirror: Mirror) -> None:
        """Sync until the mirror has seen everything (deletes included)."""
        await mirror.sync(self.db)
        if self.column_mode:
            # Column mode finds deletions with a periodic full scan: drive the clock to it.
            assert self.cfg is not None
            later = datetime.now(UTC) + timedelta(seconds=self.cfg.full_scan_interval_seconds + 1)
            await mirror.sync(self.db, later)


def fake_harness(delete_mode: str = "soft") -> Harness:
    fake = FakeAppDatabase(page_size=PAGE, delete_mode=delete_mode)  # type: ignore[arg-type]
    for name, key in (("Newsletter", "1"), ("Customers", "2"), ("Events", "3")):
        fake.app_add_list(key, name)
    for row in sample_rows(SAMPLE_SIZE, seed=7):
        fake.app_insert(str(row[1]), key=str(row[0]), first_name=str(row[2]), last_name=str(row[3]))
    fake.changes.clear()
    return Harness("fake", fake, FakeApp(fake))


async def sql_harness(
    backend: str, tmp_path: Any, triggers: bool, **overrides: Any
) -> tuple[Harness, str | None]:
    schema = None
    if backend == "postgres":
        schema = "t_" + uuid.uuid4().hex[:12]
        cfg = await create_sample_app(PG_DSN, contacts=SAMPLE_SIZE, seed=7, schema=schema)
    else:
        cfg = await create_sample_app(str(tmp_path / "app.db"), contacts=SAMPLE_SIZE, seed=7)
    cfg = msgspec.structs.replace(cfg, page_size=PAGE, **overrides)
    db = await open_appdb(cfg)
    if triggers:
        await db.install_triggers()
    app_driver: Driver
    if backend == "postgres":
        app_driver = await PostgresDriver.connect(PG_DSN, schema)
    else:
        app_driver = await SqliteDriver.connect(str(tmp_path / "app.db"))
    mode = "triggers" if triggers else "column"
    return Harness(f"{backend}-{mode}", db, SqlApp(app_driver), cfg, not triggers), schema


async def close_harness(h: Harness, schema: str | None) -> None:
    """Close what ``sql_harness`` opened and drop its PostgreSQL schema, if any."""
    await h.db.close()
    await h.app.close()
    if schema:
        await drop_schema(schema)


@asynccontextmanager
async def opened_harness(
    backend: str, tmp_path: Any, triggers: bool, **overrides: Any
) -> AsyncIterator[Harness]:
    """``sql_harness`` for the length of a block, closed (and its schema dropped) after."""
    h, schema = await sql_harness(backend, tmp_path, triggers, **overrides)
    try:
        yield h
    finally:
        await close_harness(h, schema)


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def pg_available() -> bool:
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


__all__ = [
    "AppDatabase",
    "Harness",
    "Mirror",
    "as_text",
    "drop_schema",
    "fake_harness",
    "pg_available",
    "sql_harness",
]
