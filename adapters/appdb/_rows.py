"""Rows of the app's contacts table as the engine's ContactRecords (or Rejected, with why).

The SELECT list is built once from the mapping; each row is converted positionally. Bad rows
(NULL key, invalid email, an email another live row shares, an unknown status value) become
``Rejected`` naming the key and the column, and the rest of the page goes on.

Emails are matched as ``lower(trim(email))`` in SQL (lookups by email, the duplicate check).
When the contacts table has an index on exactly that expression, each row an incremental run
reads carries the keys of the other live rows sharing its email, found by one index probe
inside the page's own query: the check grows with the rows read, not with the table. A full
scan reads every row anyway, and one ``GROUP BY`` over the table (``duplicates``) is cheaper
than a probe per row, so it keeps that (so does, on PostgreSQL, where a probe costs about
twice a row's share of the ``GROUP BY``, an incremental run that reads over half the table).
Without the index a probe would scan the table for every row: every run then does the
``GROUP BY``, and ``ccsync appdb check`` warns.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from adapters.appdb._driver import Driver, Row, as_text, parse_time, quote
from adapters.appdb.config import AppDbConfig
from engine.errors import CcsyncError
from engine.model import ContactRecord, PermissionState, is_valid_email, normalise_email
from engine.ports import Rejected

__all__ = ["ContactRows", "email_index_statement", "email_index_used"]

_enc: Final = msgspec.json.Encoder()
_FALSE_STRINGS: Final = frozenset(("", "0", "f", "false", "no", "n", "off"))


class ContactRows:
    """The contacts SELECT for a mapping, and the conversion of its rows."""

    def __init__(self, cfg: AppDbConfig, driver: Driver, *, email_indexed: bool = False) -> None:
        c = cfg.contacts
        self._cfg = cfg
        self._driver = driver
        self.email_indexed = email_indexed
        cols: list[str] = [c.key, c.email]
        self._i_updated = self._i_deleted = self._i_perm = -1
        self._i_reason = self._i_source = self._i_changed = -1
        if c.updated_at:
            self._i_updated = len(cols)
            cols.append(c.updated_at)
        if c.deleted:
            self._i_deleted = len(cols)
            cols.append(c.deleted)
        p = c.permission
        if p is not None:
            self._i_perm = len(cols)
            cols.append(p.column)
            for attr in ("reason_column", "source_column", "changed_at_column"):
                col = getattr(p, attr)
                if col:
                    setattr(self, "_i_" + attr.split("_")[0], len(cols))
                    cols.append(col)
        self._i_fields = len(cols)
        self._field_names = list(c.fields)
        cols.extend(c.fields.values())
        # Fields whose column may hold non-text values (numbers, dates) need converting;
        # text columns come back as str or None and are taken as they are, and so do
        # columns the database itself writes as as_text would (PostgreSQL's integers).
        select = [f"c.{quote(col)}" for col in cols]
        self._nontext: list[str] = []
        for i, (name, col) in enumerate(c.fields.items(), start=self._i_fields):
            if not driver.is_text(c.table, col):
                sql = driver.text_sql(c.table, col, select[i])
                if sql is None:
                    self._nontext.append(name)
                else:
                    select[i] = sql
        self.columns: tuple[str, ...] = tuple(cols)
        probe: list[str] = []
        self._i_shared = -1
        if email_indexed:
            # The keys of the other live rows holding this row's email: one probe of the
            # lower(trim(email)) index per row (NULL: none).
            self._i_shared = len(select)
            live = self.live_condition("o.")
            probe.append(
                f"(SELECT {driver.group_keys(f'o.{quote(c.key)}')} FROM {quote(c.table)} AS o "
                f"WHERE {email_expr(c.email, 'o.')} = {email_expr(c.email, 'c.')} "
                f"AND o.{quote(c.key)} <> c.{quote(c.key)}{f' AND {live}' if live else ''})"
            )
        lists: list[str] = []
        self._has_lists = cfg.memberships is not None
        if cfg.memberships is not None:
            m = cfg.memberships
            lists.append(driver.list_agg(m.table, m.list, m.contact, f"c.{quote(c.key)}"))
        # Two SELECT lists: full scans check duplicates once for the whole table (they read
        # every row anyway); incremental runs check each row they read through the index.
        self.select_list = ", ".join([*select, *lists])  # the contact columns, for joins
        self.select = f"SELECT {self.select_list} FROM {quote(c.table)} AS c"
        self.probed_list = ", ".join([*select, *probe, *lists])  # ...each with its own check
        self.probed_select = f"SELECT {self.probed_list} FROM {quote(c.table)} AS c"

    async def duplicates(self) -> dict[str, list[str]]:
        """Key -> the keys of every live row sharing its email (itself included), for the
        whole table: one pass, for full scans, and for every run when there is no index."""
        c = self._cfg.contacts
        live = self.live_condition()
        where = f"WHERE {live}" if live else ""
        rows = await self._driver.fetch(
            f"SELECT {email_expr(c.email)}, {self._driver.group_keys(quote(c.key))} "
            f"FROM {quote(c.table)} {where} GROUP BY 1 HAVING count(*) > 1"
        )
        out: dict[str, list[str]] = {}
        for e, keys in rows:
            if e is not None:
                group = str(keys).split("\x1f")
                out.update(dict.fromkeys(group, group))
        return out

    def by_email(self, emails: Sequence[str]) -> tuple[str, list[Any]]:
        """SQL for (key, email) of the live rows whose ``lower(trim(email))`` is one of
        ``emails`` (normalised), and its parameters; it probes the email index if there is one."""
        c = self._cfg.contacts
        cond, params = self._driver.text_in(email_expr(c.email), [e.lower() for e in emails])
        live = self.live_condition()
        where = cond + (f" AND {live}" if live else "")
        sql = f"SELECT {quote(c.key)}, {quote(c.email)} FROM {quote(c.table)} WHERE {where}"
        return sql, params

    def live_condition(self, alias: str = "") -> str:
        """SQL true for rows that are not soft-deleted ('' when there is no such column)."""
        c = self._cfg.contacts
        if not c.deleted:
            return ""
        col = f"{alias}{quote(c.deleted)}"
        if c.deleted_kind == "boolean":
            return f"({col} IS NULL OR {col} = {'false' if self._pg else '0'})"
        return f"{col} IS NULL"

    @property
    def updated_index(self) -> int:
        """Position of the updated-at column in a row (-1: not mapped)."""
        return self._i_updated

    @property
    def _pg(self) -> bool:
        return self._driver.dialect == "postgres"

    def convert(
        self, rows: Sequence[Row], dups: dict[str, list[str]], *, probed: bool = False
    ) -> tuple[list[ContactRecord], list[Rejected]]:
        """Rows as records, and the rows refused (one Rejected each). ``dups``: what
        ``duplicates`` returned; ``probed``: the rows were read with ``probed_list``, so
        they carry their own duplicate check (when the index exists)."""
        # The hot loop of observation: locals, cached PermissionStates, no per-row lookups.
        c = self._cfg.contacts
        perm = c.permission
        records: list[ContactRecord] = []
        rejected: list[Rejected] = []
        names = self._field_names
        i0, i1 = self._i_fields, self._i_fields + len(names)
        nontext = self._nontext
        i_del, i_perm, i_upd = self._i_deleted, self._i_perm, self._i_updated
        i_shared = self._i_shared if probed else -1
        i_reason, i_source, i_changed = self._i_reason, self._i_source, self._i_changed
        plain_perm = i_reason < 0 and i_source < 0 and i_changed < 0
        perms: dict[str, PermissionState] = {}
        statuses: dict[Any, str | None] = {}  # column value -> status, for this call
        split = self._driver.split_agg if self._has_lists else None
        record = ContactRecord
        not_set = PermissionState(status="not_set")
        for row in rows:
            key = row[0]
            if key is None:
                rejected.append(self._reject(row, "(null key)", c.key, "key is NULL"))
                continue
            store_id = key if type(key) is str else str(key)
            raw_email = row[1]
            email = normalise_email(raw_email) if type(raw_email) is str else ""
            deleted = i_del >= 0 and row[i_del] is not None and _truthy(row[i_del])
            if not deleted:
                if not is_valid_email(email):
                    problem = "email is NULL" if raw_email is None else "invalid email address"
                    rejected.append(self._reject(row, store_id, c.email, problem))
                    continue
                shared = row[i_shared] if i_shared >= 0 else dups.get(store_id) if dups else None
                if shared:
                    others = shared.split("\x1f") if type(shared) is str else shared
                    rest = ", ".join(sorted(k for k in others if k != store_id))
                    problem = f"email shared with row(s) {rest}; fix one of them in the app"
                    rejected.append(self._reject(row, store_id, c.email, problem))
                    continue
            permission = not_set
            if perm is not None:
                value = row[i_perm]
                try:
                    status = statuses[value]
                except KeyError:
                    status = statuses[value] = self._status(value)
                except TypeError:  # not hashable (an odd column type): no memo
                    status = self._status(value)
                if status is None:
                    problem = f"unknown status value {as_text(row[i_perm])!r}"
                    rejected.append(self._reject(row, store_id, perm.column, problem))
                    continue
                reason = row[i_reason] if i_reason >= 0 else None
                if reason is not None and type(reason) is not str:
                    reason = as_text(reason)
                source = row[i_source] if i_source >= 0 else None
                if source is not None and type(source) is not str:
                    source = as_text(source)
                changed = row[i_changed] if i_changed >= 0 else None
                if changed is not None:
                    changed = parse_time(changed)
                if plain_perm or (reason is None and source is None and changed is None):
                    permission = perms.get(status) or perms.setdefault(
                        status,
                        PermissionState(status=status),  # type: ignore[arg-type]
                    )
                else:
                    permission = PermissionState(
                        status=status,  # type: ignore[arg-type]
                        reason=reason,
                        source=source,
                        changed_at=changed,
                    )
            # (Lengths match by construction: no strict zip in the hot loop.)
            fields = {n: v for n, v in zip(names, row[i0:i1]) if v is not None and v != ""}  # noqa: B905
            for name in nontext:
                value = fields.get(name)
                if value is not None and type(value) is not str:
                    fields[name] = as_text(value) or ""
            # An aware UTC datetime (asyncpg's timestamptz) is taken as it is.
            updated = row[i_upd] if i_upd >= 0 else None
            if updated is not None and (type(updated) is not datetime or updated.tzinfo is not UTC):
                updated = _time(updated)
            lists: tuple[str, ...] = ()
            if split is not None:
                agg = row[-1]
                if agg:
                    lists = split(agg)
            records.append(
                record(
                    store_id=store_id,
                    email=email,
                    fields=fields,
                    permission=permission,
                    lists=lists,
                    deleted=deleted,
                    updated_at=updated,
                )
            )
        return records, rejected

    def _status(self, value: Any) -> str | None:
        p = self._cfg.contacts.permission
        assert p is not None
        if p.kind == "boolean":
            if value is None:
                return p.values.get("null", p.null)
            if _truthy(value):
                return p.values.get("true", "implicit")
            return p.values.get("false", "unsubscribed")
        if value is None:
            return p.null
        return p.values.get(value if type(value) is str else as_text(value) or "")

    def _reject(self, row: Row, record: str, field: str, problem: str) -> Rejected:
        raw = {col: as_text(v) for col, v in zip(self.columns, row, strict=False)}
        return Rejected(record=record, field=field, problem=problem, raw=_enc.encode(raw).decode())


def _time(value: object) -> datetime | None:
    # parse_time's common case inline: SQLite's naive UTC text. Parsing it with the offset
    # appended is several times cheaper than parsing it naive and replacing its tzinfo.
    if type(value) is str:
        try:
            return _fromiso(value + "+00:00")
        except ValueError:
            pass  # it has an offset of its own, or is not a time
        try:
            ts = _fromiso(value)
        except ValueError:
            return None
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return parse_time(value)


_fromiso: Final = datetime.fromisoformat


def _truthy(value: object) -> bool:
    """A soft-delete or boolean column's value as a flag (timestamps count as set)."""
    if value is None or value is False or value == 0:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return True


def email_expr(column: str, alias: str = "") -> str:
    """The expression emails are matched by, in SQL (and the one the index must cover)."""
    return f"lower(trim({alias}{quote(column)}))"


def email_index_statement(cfg: AppDbConfig, dialect: str) -> str:
    """The CREATE INDEX statement that lets email lookups and the duplicate check probe an
    index (CONCURRENTLY on PostgreSQL: it does not block the app's writes while it builds)."""
    c = cfg.contacts
    name = quote(c.table.rsplit(".", 1)[-1] + "_email_lookup")
    how = "CREATE INDEX CONCURRENTLY" if dialect == "postgres" else "CREATE INDEX"
    return f"{how} {name} ON {quote(c.table)} ({email_expr(c.email)});"


async def email_index_used(cfg: AppDbConfig, driver: Driver, live: str) -> bool:
    """Whether the database answers ``lower(trim(email)) = ...`` (on live rows) through an
    index, as the planner itself says (EXPLAIN), not by reading index definitions."""
    c = cfg.contacts
    where = f"{email_expr(c.email)} = ''" + (f" AND {live}" if live else "")
    sql = f"SELECT {quote(c.key)} FROM {quote(c.table)} WHERE {where}"
    try:
        if driver.dialect == "sqlite":
            # A fresh text each time: the connection caches prepared statements by text, and
            # a cached EXPLAIN is not re-planned after an index is created or dropped.
            plan = await driver.fetch(f"EXPLAIN QUERY PLAN {sql} /* {uuid.uuid4().hex} */")
            return any("<expr>" in str(r[-1]) and "INDEX" in str(r[-1]) for r in plan)
        # Small tables are read whole whatever the indexes: ask whether it *can* probe one.
        await driver.execute("SET enable_seqscan = off")
        try:
            (text,) = (await driver.fetch(f"EXPLAIN (FORMAT JSON) {sql}"))[0]
        finally:
            await driver.execute("RESET enable_seqscan")
    except CcsyncError:
        return False  # a column or table missing: check() reports that
    return _probes_email(msgspec.json.decode(str(text)))


def _probes_email(plan: Any) -> bool:
    if isinstance(plan, list):
        return any(_probes_email(p) for p in plan)
    if isinstance(plan, dict):
        cond = plan.get("Index Cond")
        if isinstance(cond, str) and "lower(" in cond.lower():
            return True
        return any(_probes_email(v) for v in plan.values() if isinstance(v, list | dict))
    return False
