"""Rows of the app's contacts table as the engine's ContactRecords (or Rejected, with why).

The SELECT list is built once from the mapping; each row is converted positionally. Bad rows
(NULL key, invalid email, an email another live row shares, an unknown status value) become
``Rejected`` naming the key and the column, and the rest of the page goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from adapters.appdb._driver import Driver, Row, as_text, parse_time, quote
from adapters.appdb.config import AppDbConfig
from engine.model import ContactRecord, PermissionState, is_valid_email, normalise_email
from engine.ports import Rejected

__all__ = ["ContactRows"]

_enc: Final = msgspec.json.Encoder()
_FALSE_STRINGS: Final = frozenset(("", "0", "f", "false", "no", "n", "off"))


class ContactRows:
    """The contacts SELECT for a mapping, and the conversion of its rows."""

    def __init__(self, cfg: AppDbConfig, driver: Driver) -> None:
        c = cfg.contacts
        self._cfg = cfg
        self._driver = driver
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
        # text columns come back as str or None and are taken as they are.
        self._nontext = [name for name, col in c.fields.items() if not driver.is_text(c.table, col)]
        self.columns: tuple[str, ...] = tuple(cols)
        select = [f"c.{quote(col)}" for col in cols]
        self._has_lists = cfg.memberships is not None
        if cfg.memberships is not None:
            m = cfg.memberships
            select.append(driver.list_agg(m.table, m.list, m.contact, f"c.{quote(c.key)}"))
        self.select_list = ", ".join(select)  # the contact columns, for joins
        self.select = f"SELECT {self.select_list} FROM {quote(c.table)} AS c"

    async def duplicates(self) -> dict[str, list[str]]:
        """Lower-cased emails that more than one live row holds, with those rows' keys."""
        # One pass over the table per run; usually empty.
        c = self._cfg.contacts
        live = self.live_condition()
        where = f"WHERE {live}" if live else ""
        email = f"lower(trim({quote(c.email)}))"
        rows = await self._driver.fetch(
            f"SELECT {email}, {self._driver.group_keys(quote(c.key))} FROM {quote(c.table)} "
            f"{where} GROUP BY 1 HAVING count(*) > 1"
        )
        return {str(e): str(keys).split("\x1f") for e, keys in rows if e is not None}

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
        self, rows: Sequence[Row], dups: dict[str, list[str]]
    ) -> tuple[list[ContactRecord], list[Rejected]]:
        """Rows as records, and the rows refused (one Rejected each)."""
        # The hot loop of observation: locals, cached PermissionStates, no per-row lookups.
        c = self._cfg.contacts
        perm = c.permission
        records: list[ContactRecord] = []
        rejected: list[Rejected] = []
        names = self._field_names
        i0, i1 = self._i_fields, self._i_fields + len(names)
        nontext = self._nontext
        i_del, i_perm, i_upd = self._i_deleted, self._i_perm, self._i_updated
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
                if dups:
                    others = dups.get(raw_email.strip().lower())
                    if others:
                        rest = ", ".join(k for k in others if k != store_id)
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
            records.append(
                record(
                    store_id=store_id,
                    email=email,
                    fields=fields,
                    permission=permission,
                    lists=split(row[-1]) if split is not None else (),
                    deleted=deleted,
                    updated_at=_time(row[i_upd]) if i_upd >= 0 else None,
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
