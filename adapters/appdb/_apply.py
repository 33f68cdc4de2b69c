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
from typing import Any

from adapters.appdb._batch import Batch, fail
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
)
from engine.errors import FatalError, RetriableError
from engine.model import is_valid_email, normalise_email
from engine.ports import Clock, utc_now

__all__ = ["Writer"]

# A new contact: the commands creating it, the columns, the row (in the columns' order).
_Create = list[Any]
# The upserts prepared: updates by column list, new contacts by email, the updated-at stamp.
_Prepared = tuple[dict[tuple[str, ...], list[Row]], dict[str, _Create], tuple[str, Any] | None]


def _add_create(
    creates: dict[str, _Create], email: str, i: int, cols: tuple[str, ...], row: Row
) -> None:
    entry = creates.get(email)
    if entry is None:
        creates[email] = [[i], cols, row]
        return
    # Two commands creating the same new contact: one row, a later command's value wins.
    merged = dict(zip(entry[1], entry[2], strict=True))
    merged.update(zip(cols, row, strict=True))
    entry[0].append(i)
    entry[1], entry[2] = tuple(merged), tuple(merged.values())


class Writer:
    """Applies commands for one AppDatabase."""

    def __init__(
        self, cfg: AppDbConfig, driver: Driver, rows: ContactRows, clock: Clock = utc_now
    ) -> None:
        self._cfg = cfg
        self._d = driver
        self._rows = rows
        self._clock = clock

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        """One Outcome per command, in order."""
        out: list[Outcome] = []
        size = self._cfg.write_batch
        following: _Batch | None = None
        for start in range(0, len(commands), size):
            chunk = commands[start : start + size]
            batch = following or self._batch(chunk)
            following = None
            if start + size < len(commands):
                # The next batch's Python work runs while this batch's main write is in the
                # server (``Batch.meanwhile``): the two overlap instead of taking turns.
                following = self._batch(commands[start + size : start + 2 * size])
                batch.meanwhile = following.plan
            try:
                out += await self._in_tx(batch)
            except RetriableError as exc:
                out += [fail(cmd, str(exc), retriable=True) for cmd in chunk]
            except FatalError as exc:
                if len(chunk) == 1:
                    out.append(fail(chunk[0], str(exc)))
                    continue
                for cmd in chunk:  # isolate the bad record: one transaction each
                    try:
                        out += await self._in_tx(self._batch([cmd]))
                    except RetriableError as one:
                        out.append(fail(cmd, str(one), retriable=True))
                    except FatalError as one:
                        out.append(fail(cmd, str(one)))
        return out

    def _batch(self, cmds: Sequence[Command]) -> _Batch:
        return _Batch(self._cfg, self._d, self._rows, cmds, self._clock)

    async def _in_tx(self, batch: _Batch) -> list[Outcome]:
        async with self._d.transaction(mark_writer=True):
            return await batch.run()


class _Batch(Batch):
    """A batch with all its phases (see the module docstring for their order)."""

    # ``plan``'s result: the upserts' rows, and the batch state their preparation decided.
    _planned: tuple[_Prepared, list[Outcome | None], dict[int, str], set[int]] | None = None

    def plan(self) -> None:
        """Prepare the upserts ahead, without the database (the previous batch's write is in
        the server meanwhile): given keys taken as they are, as ``_upserts`` does, and every
        command without one prepared as a new contact. ``_upserts`` uses the plan unless the
        lookup by email then finds one of those emails in the app."""
        cmds = self.cmds
        idx = [i for i, cmd in enumerate(cmds) if type(cmd) is UpsertContact]
        # (A rename changes the emails a lookup must skip: such batches prepare in turn.)
        if not idx or any(cmds[i].new_email is not None for i in idx):  # type: ignore[union-attr]
            return
        keys = self.keys
        for i in idx:
            if sid := cmds[i].store_id:
                keys[i] = sid
        kept = self.outcomes, self.details, self.stamped
        self.outcomes, self.details, self.stamped = [None] * len(cmds), {}, set()
        try:
            prepared = self._prepare(idx)
            self._planned = (prepared, self.outcomes, self.details, self.stamped)
        finally:
            self.outcomes, self.details, self.stamped = kept

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
                matched = await self._resolve(idx, trust_keys=kind is UpsertContact)
                if matched:
                    self._planned = None  # it took those emails for new contacts
                await handler(idx)
        await self._touch_updated_at()
        keys, details = self.keys, self.details
        # One Outcome per command, in order; the outbox fills in the command ids.
        get = keys.get
        if details:
            return [
                o if o is not None else Outcome(ok=True, store_id=get(i), detail=details.get(i))
                for i, o in enumerate(self.outcomes)
            ]
        return [
            o if o is not None else Outcome(ok=True, store_id=get(i))
            for i, o in enumerate(self.outcomes)
        ]

    async def _touch_updated_at(self) -> None:
        """Move the updated-at column of every contact this batch wrote, as the app's own
        writes do: the next observation then reads ccsync's writes back, which is how the
        engine learns the app's new state and confirms its commands."""
        column = self.c.updated_at
        if column is None:
            return
        # Upserts stamped the column in their own write (``_upserts``); an upsert that found
        # the row already holding its values leaves it, updated-at included, untouched.
        stamped, outcomes, cmds = self.stamped, self.outcomes, self.cmds
        keys = sorted(
            {
                key
                for i, key in self.keys.items()
                if i not in stamped and outcomes[i] is None and type(cmds[i]) is not RecordTracking
            }
        )
        if not keys:
            return
        now = self.d.time_param(self.clock())
        table, key = quote(self.c.table), quote(self.c.key)
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ", ".join("?" * len(part))
            await self.d.execute(
                f"UPDATE {table} SET {quote(column)} = ? WHERE {key} IN ({marks})",
                (now, *(self.d.key_param(self.c.table, self.c.key, k) for k in part)),
            )

    def _prepare_upserts(
        self,
        idx: Sequence[int],
        updates: dict[tuple[str, ...], list[Row]],
        creates: dict[str, _Create],
        stamp: tuple[str, Any] | None,
    ) -> None:
        """Updates of known rows into ``updates`` (by column list), new contacts into
        ``creates`` (by email)."""
        # The hot path of a sync into the app. Commands built alike name the same fields in
        # the same order: their columns are worked out once per field list (``plans``), and a
        # command's row is its key and its values as given, without a dict per command.
        keys, cmds, stamped = self.keys, self.cmds, self.stamped
        stamp_col = stamp[0] if stamp is not None else None
        plans: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]] | None] = {}
        for i in self._pending(idx):
            cmd = cmds[i]
            assert type(cmd) is UpsertContact
            fields = cmd.fields
            names = tuple(fields)
            try:
                plan = plans[names]
            except KeyError:
                plan = plans[names] = self._plain_plan(names, stamp_col)
            if plan is None or cmd.new_email is not None:
                self._prepare_one(i, cmd, updates, creates, stamp)
                continue
            key = keys.get(i)
            if key is not None:
                cols = plan[0]
                if cols:
                    group = updates.get(cols)
                    if group is None:
                        group = updates[cols] = []
                    group.append((key, *fields.values()))
                    if not cmd.lists:
                        stamped.add(i)
            elif cmd.store_id:
                self._failed(i, self._missing(i))
            elif not is_valid_email(cmd.email):
                self._failed(i, f"email: invalid email address {cmd.email!r}")
            else:
                if stamp is None:
                    row: Row = (*fields.values(), cmd.email)
                else:
                    row = (*fields.values(), cmd.email, stamp[1])
                    if not cmd.lists:
                        stamped.add(i)
                _add_create(creates, cmd.email, i, plan[1], row)

    def _plain_plan(
        self, names: tuple[str, ...], stamp_col: str | None
    ) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """For commands naming these fields: the columns of an update and of an insert, or
        None when they need ``_prepare_one`` (a field not mapped, two fields on one column,
        a field on the email or updated-at column)."""
        mapped = self.c.fields
        cols = tuple(mapped.get(f) or "" for f in names)
        email_col = self.c.email
        if "" in cols or len(set(cols)) < len(cols) or email_col in cols or stamp_col in cols:
            return None
        extra = (email_col,) if stamp_col is None else (email_col, stamp_col)
        return cols, (*cols, *extra)

    def _prepare_one(
        self,
        i: int,
        cmd: UpsertContact,
        updates: dict[tuple[str, ...], list[Row]],
        creates: dict[str, _Create],
        stamp: tuple[str, Any] | None,
    ) -> None:
        """``_prepare_upserts`` for one command, whatever its fields and renames."""
        c = self.c
        mapped = c.fields
        email_col = c.email
        fields = cmd.fields
        try:
            values: dict[str, Any] = {mapped[f]: v for f, v in fields.items()}
        except KeyError:
            unmapped = sorted(f for f in fields if f not in mapped)
            self.details[i] = f"not mapped in the app, left alone: {', '.join(unmapped)}"
            values = {mapped[f]: v for f, v in fields.items() if f in mapped}
        if cmd.new_email is not None:
            new = normalise_email(cmd.new_email)
            if not is_valid_email(new):
                self._failed(i, f"new_email: invalid email address {cmd.new_email!r}")
                return
            values[email_col] = new
        key = self.keys.get(i)
        if key is not None:
            if values:
                # Grouped by column list as given: commands built alike share one statement.
                updates.setdefault(tuple(values), []).append((key, *values.values()))
                if not cmd.lists and (stamp is None or stamp[0] not in values):
                    self.stamped.add(i)
            if cmd.new_email is not None:
                self.by_email.pop(cmd.email, None)
                self.by_email[normalise_email(cmd.new_email)] = key
        elif cmd.store_id:
            self._failed(i, self._missing(i))
        elif not is_valid_email(cmd.email):
            self._failed(i, f"email: invalid email address {cmd.email!r}")
        else:
            values[email_col] = values.pop(email_col, cmd.email)
            if stamp is not None:
                values[stamp[0]] = stamp[1]
                if not cmd.lists:
                    self.stamped.add(i)
            _add_create(creates, values[email_col], i, tuple(values), tuple(values.values()))

    def _prepare(self, idx: Sequence[int]) -> _Prepared:
        c = self.c
        # Upserts set the updated-at column in their own write (see ``_touch_updated_at``).
        stamp = (c.updated_at, self.d.time_param(self.now)) if c.updated_at else None
        creates: dict[str, _Create] = {}
        updates: dict[tuple[str, ...], list[Row]] = {}
        self._prepare_upserts(idx, updates, creates, stamp)
        return updates, creates, stamp

    async def _upserts(self, idx: Sequence[int]) -> None:
        c = self.c
        keys = self.keys
        if self._planned is not None:
            (updates, creates, stamp), self.outcomes, self.details, self.stamped = self._planned
            self._planned = None
        else:
            updates, creates, stamp = self._prepare(idx)
        stamped = self.stamped
        updated = expected = 0
        if updates:
            async with self.d.keyed(c.table, c.key):
                for cols, rows in updates.items():
                    unique = list({row[0]: row for row in rows}.values())  # the last one wins
                    expected += len(unique)
                    # (A field mapped onto the updated-at column itself: no stamp in the
                    # same SET; the batch's touch moves it afterwards, as it always did.)
                    own = stamp if stamp is None or stamp[0] not in cols else None
                    updated += await self.d.update_rows(
                        c.table, c.key, cols, unique, own, meanwhile=self._take_meanwhile()
                    )
        if updated != expected:  # rows already equal, or keys not (or no longer) in the table
            wanted = [i for i in idx if i in keys and self.outcomes[i] is None]
            found = await self._existing([keys[i] for i in wanted])
            for i in wanted:
                if keys[i] not in found:
                    del keys[i]
                    stamped.discard(i)
                    self._failed(i, self._missing(i))
        created: set[str] = set()
        if creates:
            await self._insert_contacts(creates, created)
        cmds = self.cmds
        new: list[tuple[str, str]] = []
        old: list[tuple[str, str]] = []
        for i in self._pending(idx):
            cmd = cmds[i]
            assert type(cmd) is UpsertContact
            lists = cmd.lists
            if lists and i in keys:
                key = keys[i]
                (new if key in created else old).extend((key, lst) for lst in lists)
        if (new or old) and self.cfg.memberships is not None:
            await self._add_members(old, created=new)

    async def _insert_contacts(self, creates: dict[str, _Create], created: set[str]) -> None:
        """INSERT the new contacts (one statement per column list); their keys into
        ``keys``, ``by_email`` and ``created``."""
        c = self.c
        by_cols: dict[tuple[str, ...], list[_Create]] = {}
        for entry in creates.values():
            group = by_cols.get(entry[1])
            if group is None:
                group = by_cols[entry[1]] = []
            group.append(entry)
        by_email, keys = self.by_email, self.keys
        for cols, entries in by_cols.items():
            made = await self.d.insert_rows(
                c.table,
                cols,
                [entry[2] for entry in entries],
                (c.key, c.email),
                meanwhile=self._take_meanwhile(),
            )
            for key, email in made:
                text = as_text(key) or ""
                by_email[normalise_email(str(email))] = text
                created.add(text)
            at = cols.index(c.email)
            for members, _, row in entries:
                key = by_email[normalise_email(row[at])]
                for i in members:
                    keys[i] = key

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
