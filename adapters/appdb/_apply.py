"""Commands applied to the app's database: batched, one transaction per batch.

Within a batch the phases run in this order, whatever the order of the commands: upserts
(updates, renames, creates, a new contact's lists), unsubscribes, list additions and removals,
tracking activities, deletions. A command naming no ``store_id`` is matched to a live row by
email (so a later command in the same batch finds a contact an earlier one created).

Only mapped columns are written. When a batch fails on a database error that is not transient,
its commands are applied again one per transaction, so one bad record fails alone (its Outcome
carries the database's error) and the rest succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from adapters.appdb._driver import Driver, Row, as_text, quote
from adapters.appdb._rows import ContactRows
from adapters.appdb.config import AppDbConfig
from engine.commands import (
    AddToList,
    Command,
    DeleteContact,
    Outcome,
    RecordTracking,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
    command_id,
)
from engine.errors import FatalError, RetriableError
from engine.model import is_valid_email, normalise_email

__all__ = ["Writer"]

_enc: Final = msgspec.json.Encoder(order="sorted")


class _Failed(Exception):
    """One command cannot be applied (not a database error): becomes its Outcome."""


class Writer:
    """Applies commands for one AppDatabase."""

    def __init__(self, cfg: AppDbConfig, driver: Driver, rows: ContactRows) -> None:
        self._cfg = cfg
        self._d = driver
        self._rows = rows

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        """One Outcome per command, in order."""
        out: list[Outcome] = []
        size = self._cfg.write_batch
        for start in range(0, len(commands), size):
            chunk = commands[start : start + size]
            try:
                out += await self._in_tx(chunk)
            except RetriableError as exc:
                out += [_fail(cmd, str(exc), retriable=True) for cmd in chunk]
            except FatalError as exc:
                if len(chunk) == 1:
                    out.append(_fail(chunk[0], str(exc)))
                    continue
                for cmd in chunk:  # isolate the bad record: one transaction each
                    try:
                        out += await self._in_tx([cmd])
                    except RetriableError as one:
                        out.append(_fail(cmd, str(one), retriable=True))
                    except FatalError as one:
                        out.append(_fail(cmd, str(one)))
        return out

    async def _in_tx(self, cmds: Sequence[Command]) -> list[Outcome]:
        async with self._d.transaction(mark_writer=True):
            return await _Batch(self._cfg, self._d, self._rows, cmds).run()


def _fail(cmd: Command, error: str, *, retriable: bool = False) -> Outcome:
    return Outcome(command_id=command_id(cmd), ok=False, error=error, retriable=retriable)


class _Batch:
    """One batch of commands inside one transaction."""

    def __init__(
        self, cfg: AppDbConfig, d: Driver, rows: ContactRows, cmds: Sequence[Command]
    ) -> None:
        self.cfg, self.d, self.rows, self.cmds = cfg, d, rows, cmds
        self.c = cfg.contacts
        self.outcomes: list[Outcome | None] = [None] * len(cmds)
        self.details: dict[int, str] = {}
        self.keys: dict[int, str] = {}  # command index -> resolved app key
        self.by_email: dict[str, str] = {}  # normalised email -> key (live rows, this batch)
        self.now = datetime.now(UTC)

    async def run(self) -> list[Outcome]:
        phases: list[tuple[type, Any]] = [
            (UpsertContact, self._upserts),
            (Unsubscribe, self._unsubscribes),
            (AddToList, self._memberships),
            (RecordTracking, self._tracking),
            (DeleteContact, self._deletes),
        ]
        buckets: dict[type, list[int]] = {}
        for i, cmd in enumerate(self.cmds):
            kind = AddToList if type(cmd) is RemoveFromList else type(cmd)
            buckets.setdefault(kind, []).append(i)
        for kind, handler in phases:
            idx = buckets.get(kind)
            if idx:
                # Upserts trust given keys and check the update count instead (one query
                # fewer on the bulk path); the other phases must not act on a missing row.
                await self._resolve(idx, trust_keys=kind is UpsertContact)
                await handler(idx)
        return [
            o
            if o is not None
            else Outcome(
                command_id=command_id(cmd),
                ok=True,
                store_id=self.keys.get(i),
                detail=self.details.get(i),
            )
            for i, (o, cmd) in enumerate(zip(self.outcomes, self.cmds, strict=True))
        ]

    def _failed(self, i: int, error: str) -> None:
        self.outcomes[i] = _fail(self.cmds[i], error)

    def _pending(self, idx: Sequence[int]) -> list[int]:
        return [i for i in idx if self.outcomes[i] is None]

    # --- key resolution -------------------------------------------------------------------

    async def _existing(self, keys: Sequence[str]) -> set[str]:
        c, d = self.c, self.d
        found: set[str] = set()
        for part in _chunks(keys, 5000):
            cond, params = d.key_in(c.table, c.key, part)
            found.update(str(r[0]) for r in await d.fetch(_sel(c, cond), params))
        return found

    async def _resolve(self, idx: Sequence[int], *, trust_keys: bool = False) -> None:
        c, d = self.c, self.d
        cmds = self.cmds
        given = list(dict.fromkeys(sid for i in idx if (sid := cmds[i].store_id)))
        found = set(given) if trust_keys else await self._existing(given)
        emails = sorted(
            {self.cmds[i].email for i in idx if not self.cmds[i].store_id} - set(self.by_email)
        )
        matches: dict[str, list[str]] = {}
        live = self.rows.live_condition()
        for part in _chunks(emails, 5000):
            marks = ", ".join("?" * len(part))
            where = f"lower(trim({quote(c.email)})) IN ({marks})" + (f" AND {live}" if live else "")
            for key, email in await d.fetch(
                f"SELECT {quote(c.key)}, {quote(c.email)} FROM {quote(c.table)} WHERE {where}",
                [e.lower() for e in part],
            ):
                if isinstance(email, str) and normalise_email(email) in part:
                    matches.setdefault(normalise_email(email), []).append(as_text(key) or "")
        for email, keys in matches.items():
            if len(keys) == 1:
                self.by_email[email] = keys[0]
        for i in idx:
            cmd = self.cmds[i]
            if cmd.store_id:
                if cmd.store_id in found:
                    self.keys[i] = cmd.store_id
            elif cmd.email in self.by_email:
                self.keys[i] = self.by_email[cmd.email]
            elif len(matches.get(cmd.email, ())) > 1:
                shared = ", ".join(matches[cmd.email])
                self._failed(i, f"email {cmd.email} is shared by app rows {shared}")

    def _missing(self, i: int) -> str:
        cmd = self.cmds[i]
        if cmd.store_id:
            return f"no contact with {self.c.key} = {cmd.store_id} in {self.c.table}"
        return f"no contact with email {cmd.email} in {self.c.table}"

    # --- upserts --------------------------------------------------------------------------

    async def _upserts(self, idx: Sequence[int]) -> None:
        c = self.c
        updates: dict[tuple[str, ...], list[Row]] = {}
        creates: dict[str, tuple[list[int], dict[str, Any]]] = {}
        for i in self._pending(idx):
            cmd = self.cmds[i]
            assert isinstance(cmd, UpsertContact)
            mapped = c.fields
            if mapped.keys() >= cmd.fields.keys():
                values: dict[str, Any] = {mapped[f]: v for f, v in cmd.fields.items()}
            else:
                unmapped = sorted(f for f in cmd.fields if f not in mapped)
                self.details[i] = f"not mapped in the app, left alone: {', '.join(unmapped)}"
                values = {mapped[f]: v for f, v in cmd.fields.items() if f in mapped}
            if cmd.new_email is not None:
                new = normalise_email(cmd.new_email)
                if not is_valid_email(new):
                    self._failed(i, f"new_email: invalid email address {cmd.new_email!r}")
                    continue
                values[c.email] = new
            if i in self.keys:
                if values:
                    # Grouped by column list as given: commands built alike share one statement.
                    updates.setdefault(tuple(values), []).append((self.keys[i], *values.values()))
                if cmd.new_email is not None:
                    self.by_email.pop(cmd.email, None)
                    self.by_email[normalise_email(cmd.new_email)] = self.keys[i]
            elif cmd.store_id:
                self._failed(i, self._missing(i))
            elif not is_valid_email(cmd.email):
                self._failed(i, f"email: invalid email address {cmd.email!r}")
            else:
                values[c.email] = values.pop(c.email, cmd.email)
                merged = creates.setdefault(values[c.email], ([], {}))
                merged[0].append(i)
                merged[1].update(values)  # a later command for the same new contact wins
        updated = expected = 0
        for cols, rows in updates.items():
            unique = list({row[0]: row for row in rows}.values())  # the last command wins
            expected += len(unique)
            updated += await self.d.update_rows(c.table, c.key, cols, unique)
        if updated != expected:  # rows already equal, or keys not (or no longer) in the table
            wanted = [i for i in idx if i in self.keys and self.outcomes[i] is None]
            found = await self._existing([self.keys[i] for i in wanted])
            for i in wanted:
                if self.keys[i] not in found:
                    del self.keys[i]
                    self._failed(i, self._missing(i))
        by_cols: dict[tuple[str, ...], list[tuple[list[int], dict[str, Any]]]] = {}
        for entry in creates.values():
            by_cols.setdefault(tuple(sorted(entry[1])), []).append(entry)
        for cols, entries in by_cols.items():
            made = await self.d.insert_rows(
                c.table, cols, [tuple(v[col] for col in cols) for _, v in entries], (c.key, c.email)
            )
            for key, email in made:
                self.by_email[normalise_email(str(email))] = as_text(key) or ""
            for members, values in entries:
                for i in members:
                    self.keys[i] = self.by_email[normalise_email(values[c.email])]
        joins = [
            (self.keys[i], lst)
            for i in self._pending(idx)
            if i in self.keys
            for lst in getattr(self.cmds[i], "lists", ())
        ]
        if joins and self.cfg.memberships is not None:
            await self._add_members(joins)

    # --- unsubscribes ---------------------------------------------------------------------

    async def _unsubscribes(self, idx: Sequence[int]) -> None:
        p = self.c.permission
        groups: dict[tuple[str, ...], list[Row]] = {}
        for i in self._pending(idx):
            cmd = self.cmds[i]
            assert isinstance(cmd, Unsubscribe)
            if p is None:
                self._failed(i, "no permission column is mapped (appdb.contacts.permission)")
                continue
            if i not in self.keys:
                self._failed(i, self._missing(i))
                continue
            values: dict[str, Any] = {p.column: p.app_value_for("unsubscribed")}
            if p.reason_column:
                values[p.reason_column] = cmd.reason
            if p.source_column:
                values[p.source_column] = cmd.source
            if p.changed_at_column:
                values[p.changed_at_column] = self.d.time_param(cmd.opted_out_at or self.now)
            cols = tuple(values)
            groups.setdefault(cols, []).append((self.keys[i], *values.values()))
        for cols, rows in groups.items():
            await self.d.update_rows(self.c.table, self.c.key, cols, rows)

    # --- memberships ----------------------------------------------------------------------

    async def _memberships(self, idx: Sequence[int]) -> None:
        m = self.cfg.memberships
        adds: list[tuple[str, str]] = []
        removes: list[tuple[str, str]] = []
        wanted = self._pending(idx)
        lists = {getattr(self.cmds[i], "list_id", "") for i in wanted}
        known = await self._known_lists(sorted(lists))
        for i in wanted:
            cmd = self.cmds[i]
            assert isinstance(cmd, AddToList | RemoveFromList)
            if m is None:
                self._failed(i, "no membership table is mapped (appdb.memberships)")
            elif i not in self.keys:
                self._failed(i, self._missing(i))
            elif known is not None and cmd.list_id not in known:
                self._failed(i, f"no list with key {cmd.list_id} in the app")
            else:
                (adds if isinstance(cmd, AddToList) else removes).append(
                    (self.keys[i], cmd.list_id)
                )
        if adds:
            await self._add_members(adds)
        if removes and m is not None:
            await self.d.delete_rows(m.table, (m.contact, m.list), self._member_rows(removes))

    async def _known_lists(self, ids: list[str]) -> set[str] | None:
        lm = self.cfg.lists
        if lm is None or not ids:
            return None
        cond, params = self.d.key_in(lm.table, lm.key, ids)
        rows = await self.d.fetch(
            f"SELECT {quote(lm.key)} FROM {quote(lm.table)} WHERE {cond}", params
        )
        return {as_text(r[0]) or "" for r in rows}

    def _member_rows(self, pairs: Sequence[tuple[str, str]]) -> list[Row]:
        m = self.cfg.memberships
        assert m is not None
        return [
            (self.d.key_param(m.table, m.contact, k), self.d.key_param(m.table, m.list, lst))
            for k, lst in dict.fromkeys(pairs)
        ]

    async def _add_members(self, pairs: Sequence[tuple[str, str]]) -> None:
        m = self.cfg.memberships
        assert m is not None
        await self.d.insert_missing(m.table, (m.contact, m.list), self._member_rows(pairs), 2)

    # --- tracking -------------------------------------------------------------------------

    async def _tracking(self, idx: Sequence[int]) -> None:
        a = self.cfg.activities
        cols: list[str] = []
        if a is not None:
            cols = [a.contact, a.campaign, a.kind, a.created_time]
            cols += [x for x in (a.campaign_name, a.email, a.details) if x]
        rows: dict[tuple[Any, ...], Row] = {}
        for i in self._pending(idx):
            cmd = self.cmds[i]
            assert isinstance(cmd, RecordTracking)
            if a is None:
                self._failed(i, "no activities table is mapped (appdb.activities)")
                continue
            if i not in self.keys:
                self._failed(i, self._missing(i))
                continue
            key = self.d.key_param(a.table, a.contact, self.keys[i])
            for act in cmd.activities:
                row: list[Any] = [
                    key,
                    act.campaign_activity_id,
                    a.app_kind(act.kind),
                    self.d.time_param(act.created_time),
                ]
                if a.campaign_name:
                    row.append(act.campaign_name)
                if a.email:
                    row.append(act.email)
                if a.details:
                    row.append(_enc.encode(act.details).decode() if act.details else None)
                rows.setdefault(tuple(row[:4]), tuple(row))
        if rows and a is not None:
            await self.d.insert_missing(a.table, cols, list(rows.values()), 4)

    # --- deletions ------------------------------------------------------------------------

    async def _deletes(self, idx: Sequence[int]) -> None:
        c, m = self.c, self.cfg.memberships
        doomed: list[str] = []
        for i in self._pending(idx):
            if i not in self.keys:
                self.details[i] = "already absent"
                continue
            if self.cfg.delete_mode == "soft" and not c.deleted:
                self._failed(
                    i, "soft delete needs appdb.contacts.deleted (or delete_mode = 'hard')"
                )
                continue
            doomed.append(self.keys[i])
        if not doomed:
            return
        keyed = [(self.d.key_param(c.table, c.key, k),) for k in dict.fromkeys(doomed)]
        if self.cfg.delete_mode == "soft":
            assert c.deleted is not None
            flag: Any = True if c.deleted_kind == "boolean" else self.d.time_param(self.now)
            await self.d.update_rows(c.table, c.key, (c.deleted,), [(k, flag) for k in doomed])
            return
        if m is not None:
            await self.d.delete_rows(
                m.table, (m.contact,), [(self.d.key_param(m.table, m.contact, k),) for k in doomed]
            )
        await self.d.delete_rows(c.table, (c.key,), keyed)


def _sel(c: Any, cond: str) -> str:
    return f"SELECT {quote(c.key)} FROM {quote(c.table)} WHERE {cond}"


def _chunks(items: Sequence[str], n: int) -> list[Sequence[str]]:
    return [items[i : i + n] for i in range(0, len(items), n)]
