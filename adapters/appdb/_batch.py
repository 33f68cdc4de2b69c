"""The state of one batch of commands, key resolution, and the membership, tracking and
deletion phases (the upsert and unsubscribe phases are in ``_apply``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from adapters.appdb._driver import Driver, Row, as_text, quote
from adapters.appdb._rows import ContactRows
from adapters.appdb.config import AppDbConfig
from engine.commands import (
    AddToList,
    Command,
    Outcome,
    RecordTracking,
    RemoveFromList,
)
from engine.model import normalise_email
from engine.ports import Clock, utc_now

__all__ = ["Batch", "fail"]

_enc: Final = msgspec.json.Encoder(order="sorted")


def fail(cmd: Command, error: str, *, retriable: bool = False) -> Outcome:
    # No command id: the outbox pairs outcomes with commands by order (and hashing every
    # command cost about half of the adapter's own time per upsert).
    return Outcome(ok=False, error=error, retriable=retriable)


class Batch:
    """One batch of commands inside one transaction: what is resolved and decided so far."""

    def __init__(
        self,
        cfg: AppDbConfig,
        d: Driver,
        rows: ContactRows,
        cmds: Sequence[Command],
        clock: Clock = utc_now,
    ) -> None:
        self.cfg, self.d, self.rows, self.cmds = cfg, d, rows, cmds
        self.c = cfg.contacts
        self.outcomes: list[Outcome | None] = [None] * len(cmds)
        self.details: dict[int, str] = {}
        self.keys: dict[int, str] = {}  # command index -> resolved app key
        self.stamped: set[int] = set()  # commands whose own write set the updated-at column
        self.by_email: dict[str, str] = {}  # normalised email -> key (live rows, this batch)
        self.clock = clock
        self.now = clock()
        # Work to do while this batch's main write runs in the server: the next batch's plan.
        self.meanwhile: Callable[[], None] | None = None

    def _take_meanwhile(self) -> Callable[[], None] | None:
        """``meanwhile``, once (for the first big write of the batch)."""
        work, self.meanwhile = self.meanwhile, None
        return work

    def _failed(self, i: int, error: str) -> None:
        self.outcomes[i] = fail(self.cmds[i], error)

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

    async def _resolve(self, idx: Sequence[int], *, trust_keys: bool = False) -> int:
        """Keys of the commands: given ones (checked unless ``trust_keys``), else found by
        email; the number of emails found in the app."""
        d = self.d
        cmds = self.cmds
        found: set[str] | None = None  # None: every given key is taken as it is
        if not trust_keys:
            found = await self._existing(
                list(dict.fromkeys(sid for i in idx if (sid := cmds[i].store_id)))
            )
        emails = sorted({cmds[i].email for i in idx if not cmds[i].store_id} - set(self.by_email))
        matches: dict[str, list[str]] = {}
        for part in _chunks(emails, 5000):
            # Through the lower(trim(email)) index when the app has one (docs/appdb.md).
            wanted = set(part)
            for key, email in await d.fetch(*self.rows.by_email(part)):
                if isinstance(email, str) and normalise_email(email) in wanted:
                    matches.setdefault(normalise_email(email), []).append(as_text(key) or "")
        for email, keys in matches.items():
            if len(keys) == 1:
                self.by_email[email] = keys[0]
        by_email = self.by_email
        for i in idx:
            cmd = cmds[i]
            sid = cmd.store_id
            if sid:
                if found is None or sid in found:
                    self.keys[i] = sid
            elif cmd.email in by_email:
                self.keys[i] = by_email[cmd.email]
            elif len(matches.get(cmd.email, ())) > 1:
                shared = ", ".join(matches[cmd.email])
                self._failed(i, f"email {cmd.email} is shared by app rows {shared}")
        return len(matches)

    def _missing(self, i: int) -> str:
        cmd = self.cmds[i]
        if cmd.store_id:
            return f"no contact with {self.c.key} = {cmd.store_id} in {self.c.table}"
        return f"no contact with email {cmd.email} in {self.c.table}"

    # --- upserts --------------------------------------------------------------------------

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

    async def _add_members(
        self, pairs: Sequence[tuple[str, str]], created: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Add memberships unless present. ``created``: pairs whose contact this transaction
        inserted, so none can be present: inserted without looking first."""
        m = self.cfg.memberships
        assert m is not None
        cols = (m.contact, m.list)
        if pairs:
            await self.d.insert_missing(m.table, cols, self._member_rows(pairs), 2)
        if created:
            await self.d.insert_new(m.table, cols, self._member_rows(created))

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
