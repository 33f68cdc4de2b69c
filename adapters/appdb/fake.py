"""``FakeAppDatabase``: an in-memory app database with the same port semantics as AppDatabase.

It behaves like a real backend with triggers installed: observation follows a change log
(deletions appear as ``ContactRecord(deleted=True)``), the first run is a full scan, and
changes ccsync itself applied are observed back like any other. The ``app_*`` methods play the
application writing its own data. Engine tests use it in place of a database.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

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
from engine.model import (
    ContactRecord,
    ListRecord,
    Permission,
    PermissionState,
    Store,
    is_valid_email,
    normalise_email,
)
from engine.ports import Page, Rejected

__all__ = ["FakeAppDatabase", "FakeContact"]

_enc: Final = msgspec.json.Encoder(order="sorted")


class _Token(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    seq: int = 0
    after: int = 0  # scan cursor (position in key order) while a scan is under way
    scanning: bool = False


@dataclass
class FakeContact:
    """One row of the fake contacts table (what the app holds, email as the app typed it)."""

    email: str
    fields: dict[str, str] = field(default_factory=dict)
    status: Permission = "implicit"
    reason: str | None = None
    deleted: bool = False
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    notes: str | None = None  # never mapped: ccsync must not touch it


class FakeAppDatabase:
    """In-memory ContactSource + ListSource + CommandSink (see module docstring)."""

    def __init__(
        self, *, page_size: int = 100, delete_mode: Literal["soft", "hard"] = "soft"
    ) -> None:
        self.page_size = page_size
        self.delete_mode = delete_mode
        self.contacts: dict[str, FakeContact] = {}
        self.lists: dict[str, ListRecord] = {}
        self.members: dict[str, set[str]] = {}
        self.activities: set[tuple[str, str, str, datetime]] = set()
        self.changes: list[tuple[int, str, str, str]] = []  # (seq, key, email, writer)
        self._seq = 0
        self._next_key = 1
        self.closed = False

    @property
    def store(self) -> Store:
        """Always ``app``."""
        return "app"

    # --- the application's own writes ------------------------------------------------------

    def _changed(self, key: str, writer: str = "app") -> None:
        self._seq += 1
        c = self.contacts.get(key)
        self.changes.append((self._seq, key, c.email if c else "", writer))

    def app_insert(self, email: str, key: str | None = None, **fields: str) -> str:
        """The app creates a contact; returns its key."""
        if key is None:
            key = str(self._next_key)
        if key.isdigit():
            self._next_key = max(self._next_key, int(key) + 1)
        self.contacts[key] = FakeContact(email=email, fields=dict(fields))
        self._changed(key)
        return key

    def app_update(self, key: str, *, email: str | None = None, **fields: str | None) -> None:
        """The app edits a contact (None clears a field)."""
        c = self.contacts[key]
        if email is not None:
            c.email = email
        for name, value in fields.items():
            if value is None:
                c.fields.pop(name, None)
            else:
                c.fields[name] = value
        c.updated_at = datetime.now(UTC)
        self._changed(key)

    def app_set_status(self, key: str, status: Permission) -> None:
        """The app changes a contact's subscription status."""
        self.contacts[key].status = status
        self._changed(key)

    def app_delete(self, key: str) -> None:
        """The app deletes a contact outright."""
        email = self.contacts.pop(key).email
        self.members.pop(key, None)
        self._seq += 1
        self.changes.append((self._seq, key, email, "app"))

    def app_join(self, key: str, list_id: str) -> None:
        """The app adds a contact to a list."""
        self.members.setdefault(key, set()).add(list_id)
        self._changed(key)

    def app_add_list(self, key: str, name: str) -> None:
        """The app creates a list."""
        self.lists[key] = ListRecord(store_id=key, name=name)

    # --- observation -----------------------------------------------------------------------

    async def observe_contacts(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        """Pages of changes after ``resume``; a full scan when there is none."""
        tok = msgspec.json.decode(resume, type=_Token) if resume else None
        if tok is None or tok.scanning:
            start = tok.after if tok else 0
            seq = tok.seq if tok else self._seq
            keys = sorted(self.contacts, key=_order)
            while True:
                chunk = keys[start : start + self.page_size]
                start += len(chunk)
                done = start >= len(keys)
                nxt = _Token(seq=seq) if done else _Token(seq=seq, after=start, scanning=True)
                yield self._page("scan", chunk, nxt, full_scan=True)
                if done:
                    return
        high, seq = self._seq, tok.seq
        while True:
            batch = [c for c in self.changes if seq < c[0] <= high][: self.page_size]
            if batch:
                seq = batch[-1][0]
            # Every change, ccsync's own included: the engine confirms its writes by seeing them.
            emails = {k: e for _, k, e, _w in batch}
            yield self._page(
                f"changes after {tok.seq}", list(emails), _Token(seq=seq), False, emails
            )
            if len(batch) < self.page_size:
                return

    def _page(
        self,
        request: str,
        keys: Sequence[str],
        tok: _Token,
        full_scan: bool,
        gone_emails: dict[str, str] | None = None,
    ) -> Page:
        by_email: dict[str, list[str]] = {}
        for k, row in self.contacts.items():
            if not row.deleted:
                by_email.setdefault(normalise_email(row.email), []).append(k)
        records: list[ContactRecord] = []
        rejected: list[Rejected] = []
        for key in keys:
            c = self.contacts.get(key)
            if c is None:
                email = normalise_email((gone_emails or {}).get(key, ""))
                records.append(ContactRecord(store_id=key, email=email, deleted=True))
                continue
            email = normalise_email(c.email)
            raw = _enc.encode({"key": key, "email": c.email, **c.fields}).decode()
            if not is_valid_email(email) and not c.deleted:
                rejected.append(
                    Rejected(record=key, field="email", problem="invalid email address", raw=raw)
                )
                continue
            shared = [k for k in by_email.get(email, []) if k != key]
            if shared and not c.deleted:
                problem = (
                    f"email shared with row(s) {', '.join(shared)}; fix one of them in the app"
                )
                rejected.append(Rejected(record=key, field="email", problem=problem, raw=raw))
                continue
            records.append(
                ContactRecord(
                    store_id=key,
                    email=email,
                    fields=dict(c.fields),
                    permission=PermissionState(status=c.status, reason=c.reason),
                    lists=tuple(sorted(self.members.get(key, ()))),
                    deleted=c.deleted,
                    updated_at=c.updated_at,
                )
            )
        digest = hashlib.sha256(_enc.encode([records, rejected])).hexdigest()
        return Page(
            request=f"fake {request}",
            contacts=tuple(records),
            rejected=tuple(rejected),
            content_hash=digest,
            resume=_enc.encode(tok).decode(),
            full_scan=full_scan,
        )

    async def observe_lists(self) -> tuple[str, Sequence[ListRecord]]:
        """Every list."""
        return ("fake lists", [self.lists[k] for k in sorted(self.lists, key=_order)])

    # --- writes ----------------------------------------------------------------------------

    def _find(self, cmd: Command) -> str | None:
        if cmd.store_id:
            return cmd.store_id if cmd.store_id in self.contacts else None
        hits = [
            k
            for k, c in self.contacts.items()
            if not c.deleted and normalise_email(c.email) == cmd.email
        ]
        return hits[0] if len(hits) == 1 else None

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        """Apply each command; one Outcome each, in order (phases as in AppDatabase)."""
        order = (
            UpsertContact,
            Unsubscribe,
            AddToList | RemoveFromList,
            RecordTracking,
            DeleteContact,
        )
        results: dict[int, Outcome] = {}
        for kind in order:
            for i, cmd in enumerate(commands):
                if isinstance(cmd, kind):
                    results[i] = self._apply_one(cmd)
        return [results[i] for i in range(len(commands))]

    def _apply_one(self, cmd: Command) -> Outcome:
        cid = command_id(cmd)
        key = self._find(cmd)

        def fail(error: str) -> Outcome:
            return Outcome(command_id=cid, ok=False, error=error)

        if isinstance(cmd, UpsertContact):
            if key is None:
                if cmd.store_id:
                    return fail(f"no contact with key {cmd.store_id}")
                if not is_valid_email(cmd.email):
                    return fail(f"email: invalid email address {cmd.email!r}")
                key = str(self._next_key)
                self._next_key += 1
                self.contacts[key] = FakeContact(email=cmd.email)
                for lst in cmd.lists:
                    self.members.setdefault(key, set()).add(lst)
            c = self.contacts[key]
            if cmd.new_email is not None:
                if not is_valid_email(normalise_email(cmd.new_email)):
                    return fail(f"new_email: invalid email address {cmd.new_email!r}")
                c.email = normalise_email(cmd.new_email)
            for name, value in cmd.fields.items():
                if value is None:
                    c.fields.pop(name, None)
                else:
                    c.fields[name] = value
        elif key is None:
            if isinstance(cmd, DeleteContact):
                return Outcome(command_id=cid, ok=True, detail="already absent")
            return fail(f"no contact with email {cmd.email}")
        elif isinstance(cmd, Unsubscribe):
            self.contacts[key].status = "unsubscribed"
            self.contacts[key].reason = cmd.reason
        elif isinstance(cmd, AddToList):
            if self.lists and cmd.list_id not in self.lists:
                return fail(f"no list with key {cmd.list_id} in the app")
            self.members.setdefault(key, set()).add(cmd.list_id)
        elif isinstance(cmd, RemoveFromList):
            self.members.get(key, set()).discard(cmd.list_id)
        elif isinstance(cmd, RecordTracking):
            for a in cmd.activities:
                self.activities.add((key, a.campaign_activity_id, a.kind, a.created_time))
        elif isinstance(cmd, DeleteContact):
            if self.delete_mode == "soft":
                self.contacts[key].deleted = True
            else:
                del self.contacts[key]
                self.members.pop(key, None)
        self._changed(key, "ccsync")
        return Outcome(command_id=cid, ok=True, store_id=key)

    async def install_triggers(self) -> None:
        """Nothing to install: the fake always keeps a change log."""

    async def uninstall_triggers(self) -> None:
        """Nothing to remove."""

    async def check(self) -> list[str]:
        """The fake's schema always matches."""
        return []

    async def close(self) -> None:
        """Mark closed."""
        self.closed = True


def _order(key: str) -> tuple[int, str]:
    return (0, f"{int(key):020d}") if key.isdigit() else (1, key)
