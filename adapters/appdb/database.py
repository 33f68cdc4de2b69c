"""``AppDatabase``: the app's SQL database as a ContactSource, ListSource and CommandSink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Literal

import structlog

from adapters.appdb._apply import Writer
from adapters.appdb._driver import Driver, as_text, parse_time, quote
from adapters.appdb._observe import Observer
from adapters.appdb._rows import ContactRows, email_index_statement, email_index_used
from adapters.appdb._triggers import install_sql, uninstall_sql
from adapters.appdb.config import AppDbConfig
from engine.commands import Command, Outcome
from engine.errors import ConfigError
from engine.model import ListRecord, Store
from engine.ports import Clock, Page, utc_now

__all__ = ["AppDatabase", "open_appdb"]

log = structlog.get_logger("ccsync.appdb")


async def open_appdb(
    cfg: AppDbConfig, *, check_schema: bool = True, clock: Clock = utc_now
) -> AppDatabase:
    """Connect and check the mapping against the live schema.

    Raises ConfigError naming the first missing table or column (``appdb.contacts.email``).
    ``check_schema=False`` skips that (for ``check`` itself, which lists every mismatch).
    ``clock`` stamps ccsync's writes to the updated-at column (and opt-out times a command does
    not carry): it must be the clock of the engine's cycle bounds, which the next observation
    reads back between.
    """
    driver: Driver
    if cfg.backend == "postgres":
        from adapters.appdb._postgres import PostgresDriver

        driver = await PostgresDriver.connect(cfg.resolved_dsn(), cfg.schema)
    else:
        from adapters.appdb._sqlite import SqliteDriver

        driver = await SqliteDriver.connect(cfg.resolved_dsn())
    db = AppDatabase(cfg, driver, clock)
    try:
        if check_schema:
            await db._start()
        else:
            await db._schema_problems()  # reads the column types the conversions use
            await db._detect_mode(strict=False)
    except BaseException:
        await driver.close()
        raise
    return db


class AppDatabase:
    """One connection to the app's database, with the mapping applied. See docs/appdb.md."""

    def __init__(self, cfg: AppDbConfig, driver: Driver, clock: Clock = utc_now) -> None:
        self.cfg = cfg
        self._d = driver
        self._rows = ContactRows(cfg, driver)
        self._clock = clock
        self._writer = Writer(cfg, driver, self._rows, clock)
        self._observer = Observer(cfg, driver, self._rows, triggers=False)

    async def _start(self) -> None:
        problems = await self._schema_problems()
        if problems:
            key, problem = problems[0]
            raise ConfigError(key, problem)
        await self._detect_mode(strict=True)

    @property
    def store(self) -> Store:
        """Always ``app``."""
        return "app"

    @property
    def change_detection(self) -> Literal["changes", "column"]:
        """How changes are found now: the trigger-filled change table, or the updated-at column."""
        return self._observer.mode

    @property
    def driver(self) -> Driver:
        """The backend connection (for the sample app, tests and benchmarks)."""
        return self._d

    async def close(self) -> None:
        """Close the connection."""
        await self._d.close()

    async def __aenter__(self) -> AppDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- observation ----------------------------------------------------------------------

    async def observe_contacts(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        """Pages of contacts changed since ``resume`` (see adapters.appdb._observe)."""
        async for page in self._observer.observe(resume, bound):
            log.debug(
                "appdb.page_observed",
                request=page.request,
                contacts=len(page.contacts),
                rejected=len(page.rejected),
                full_scan=page.full_scan,
            )
            yield page

    async def observe_lists(self) -> tuple[str, Sequence[ListRecord]]:
        """Every list of the app's lists table (soft-deleted ones with ``deleted=True``)."""
        lm = self.cfg.lists
        if lm is None:
            return ("appdb lists (not mapped)", ())
        cols = [lm.key, lm.name, lm.description, lm.updated_at, lm.deleted]
        select = ", ".join(quote(c) if c else "NULL" for c in cols)
        rows = await self._d.fetch(
            f"SELECT {select} FROM {quote(lm.table)} ORDER BY {quote(lm.key)}"
        )
        out = [
            ListRecord(
                store_id=as_text(key) or "",
                name=as_text(name) or "",
                description=as_text(desc),
                updated_at=parse_time(updated),
                deleted=bool(deleted) and deleted not in ("0", "false", "f"),
            )
            for key, name, desc, updated, deleted in rows
            if key is not None
        ]
        return (f"appdb lists {lm.table}", out)

    # --- writes ---------------------------------------------------------------------------

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        """Apply commands in batched transactions; one Outcome per command, in order."""
        outcomes = await self._writer.apply(commands)
        failed = sum(not o.ok for o in outcomes)
        log.info("appdb.applied", commands=len(commands), failed=failed)
        return outcomes

    # --- schema ---------------------------------------------------------------------------

    async def check(self) -> list[str]:
        """Every mismatch between the mapping and the live schema (empty: all good)."""
        out = [f"{key}: {problem}" for key, problem in await self._schema_problems()]
        if not await self._triggers_installed() and self.cfg.contacts.updated_at is None:
            out.append(
                "appdb.contacts.updated_at: no triggers installed and no updated-at column: "
                "changes cannot be found (map one, or run `ccsync appdb install-triggers`)"
            )
        if self.cfg.change_detection == "triggers" and not await self._triggers_installed():
            out.append(
                "appdb.change_detection: 'triggers' but they are not installed "
                "(run `ccsync appdb install-triggers`)"
            )
        p = self.cfg.contacts.permission
        if not out and p is not None and p.kind == "text":
            rows = await self._d.fetch(
                f"SELECT DISTINCT {quote(p.column)} FROM {quote(self.cfg.contacts.table)} "
                f"WHERE {quote(p.column)} IS NOT NULL LIMIT 1000"
            )
            for (value,) in rows:
                text = as_text(value) or ""
                if text not in p.values:
                    out.append(
                        f"appdb.contacts.permission.values: the app holds {text!r} in "
                        f"{self.cfg.contacts.table}.{p.column}, which is not mapped"
                    )
        return out

    async def warnings(self) -> list[str]:
        """What works but will not scale (empty: nothing); ``ccsync appdb check`` prints these
        without failing. Today: no index on the expression emails are matched by."""
        c = self.cfg.contacts
        if await self._schema_problems():
            return []  # check() reports those; an index on a missing column means nothing
        if await email_index_used(self.cfg, self._d, self._rows.live_condition()):
            return []
        return [
            f"appdb.contacts.email: no index on lower(trim({c.email})) of {c.table}: every "
            "observation run checks the whole table for shared emails, and every batch of "
            "commands without a key scans it to find contacts by email (fine for a small "
            "table; it grows with the table). Create the index: "
            + email_index_statement(self.cfg, self._d.dialect)
        ]

    async def install_triggers(self) -> None:
        """Create the change table and its triggers; change detection switches to them."""
        problems = await self._schema_problems()
        if problems:
            raise ConfigError(*problems[0])
        schema = await self._pg_schema()
        await self._d.executescript(install_sql(self.cfg, self._d.dialect, schema))
        await self._detect_mode(strict=False)
        log.info("appdb.triggers_installed", change_table=self.cfg.change_table)

    async def uninstall_triggers(self) -> None:
        """Drop the triggers and the change table; change detection falls back to the column."""
        schema = await self._pg_schema()
        await self._d.executescript(uninstall_sql(self.cfg, self._d.dialect, schema))
        await self._detect_mode(strict=False)
        log.info("appdb.triggers_uninstalled", change_table=self.cfg.change_table)

    async def _pg_schema(self) -> str | None:
        if self._d.dialect != "postgres":
            return None
        rows = await self._d.fetch(
            "SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass(?)",
            (quote(self.cfg.contacts.table),),
        )
        return str(rows[0][0]).strip('"') if rows else None

    async def _triggers_installed(self) -> bool:
        table = self.cfg.change_table
        if self._d.dialect == "postgres":
            schema = await self._pg_schema()
            table = f"{schema}.{table}" if schema else table
        return await self._d.columns(table) is not None

    async def _detect_mode(self, *, strict: bool) -> None:
        installed = await self._triggers_installed()
        if strict and self.cfg.change_detection == "triggers" and not installed:
            raise ConfigError(
                "appdb.change_detection",
                "'triggers' but they are not installed (run `ccsync appdb install-triggers`)",
            )
        use = installed and self.cfg.change_detection != "column"
        if strict and not use and self.cfg.contacts.updated_at is None:
            raise ConfigError(
                "appdb.contacts.updated_at",
                "without triggers, change detection needs an updated-at column",
            )
        self._d.writer_table = self.cfg.change_table + "_writer" if installed else None
        # Rebuilt now that the driver knows the columns' types (see ContactRows), and whether
        # emails can be matched through an index (the duplicate check depends on it).
        indexed = await email_index_used(self.cfg, self._d, self._rows.live_condition())
        self._rows = ContactRows(self.cfg, self._d, email_indexed=indexed)
        self._writer = Writer(self.cfg, self._d, self._rows, self._clock)
        self._observer = Observer(self.cfg, self._d, self._rows, triggers=use)

    async def _schema_problems(self) -> list[tuple[str, str]]:
        cfg = self.cfg
        wanted: list[tuple[str, str, dict[str, str | None]]] = []
        c = cfg.contacts
        cmap: dict[str, str | None] = {
            "key": c.key,
            "email": c.email,
            "updated_at": c.updated_at,
            "deleted": c.deleted,
        }
        cmap.update({f"fields.{k}": v for k, v in c.fields.items()})
        if c.permission is not None:
            p = c.permission
            cmap.update(
                {
                    "permission.column": p.column,
                    "permission.reason_column": p.reason_column,
                    "permission.source_column": p.source_column,
                    "permission.changed_at_column": p.changed_at_column,
                }
            )
        wanted.append(("contacts", c.table, cmap))
        for name, section in (
            ("lists", cfg.lists),
            ("memberships", cfg.memberships),
            ("activities", cfg.activities),
        ):
            if section is None:
                continue
            fields = {
                f: getattr(section, f)
                for f in section.__struct_fields__
                if f not in ("table", "kind_values") and isinstance(getattr(section, f), str | None)
            }
            wanted.append((name, section.table, fields))
        out: list[tuple[str, str]] = []
        for name, table, cols in wanted:
            have = await self._d.columns(table)
            if have is None:
                out.append((f"appdb.{name}.table", f"table {table!r} not found"))
                continue
            for key, col in cols.items():
                if col is not None and col not in have:
                    out.append(
                        (f"appdb.{name}.{key}", f"column {col!r} not found in table {table!r}")
                    )
        return out
