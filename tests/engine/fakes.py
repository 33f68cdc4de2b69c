"""An in-memory store for engine tests: contacts, lists and incremental observation, with a
record of every write so tests can check what the engine did, not only where it ended up."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

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
from engine.errors import FatalError, RetriableError
from engine.model import ContactRecord, ListRecord, PermissionState, Store, TrackingActivity
from engine.ports import Page, Rejected


class FakeStore:
    """A store that numbers every change; observation returns what changed after a number."""

    def __init__(self, store: Store, page_size: int = 50, reports_ids: bool = True) -> None:
        self._store: Store = store
        self.page_size = page_size
        # Whether a create's outcome says the new contact's id (Constant Contact's bulk import,
        # through which ccsync creates contacts there, does not)
        self.reports_ids = reports_ids
        # Each contact a command created, and the contact of the other store it was made from
        # (the command's ``source_id``): who is the same person, whatever the engine believes
        self.made_from: dict[str, str | None] = {}
        self.listed: set[str] = set()  # the contacts a listing has returned
        # The contacts ccsync created that a person renamed before any listing returned them
        self.renamed_unseen: set[str] = set()
        self.contacts: dict[str, ContactRecord] = {}
        self.stamps: dict[str, int] = {}
        self.lists: dict[str, ListRecord] = {}
        self.tracking: set[TrackingActivity] = set()
        self.writes: list[Command] = []
        self.violations: list[str] = []
        self.fail_next: int = 0  # the next N commands fail (a remote error)
        self.lose_next: int = 0  # the next N commands are answered applied, and lost
        self.fatal: str | None = None  # every write fails fatally (a spent quota) while set
        self.fatal_calls = 0
        # While set, a listing gives this many pages and then fails (a server out of reach)
        self.listing_fails_after: int | None = None
        self._rejects: list[Rejected] = []  # returned by the next listing, on its first page
        self._seq = 0
        self._ids = 0
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    @property
    def store(self) -> Store:
        return self._store

    # --- changes made "by people" (tests) ------------------------------------------------

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def _put(self, rec: ContactRecord) -> ContactRecord:
        self._seq += 1
        rec = msgspec.structs.replace(rec, updated_at=self.tick())
        self.contacts[rec.store_id] = rec
        self.stamps[rec.store_id] = self._seq
        return rec

    def add(
        self, email: str, *, lists: Sequence[str] = (), status: str = "implicit", **fields: str
    ) -> str:
        self._ids += 1
        sid = f"{self._store}-{self._ids}"
        perm = PermissionState(status=status, source="Account", changed_at=self.now)  # type: ignore[arg-type]
        self._put(
            ContactRecord(
                store_id=sid,
                email=email,
                fields=dict(fields),
                permission=perm,
                lists=tuple(sorted(lists)),
            )
        )
        return sid

    def edit(self, sid: str, **fields: str | None) -> None:
        rec = self.contacts[sid]
        new = dict(rec.fields)
        for k, v in fields.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
        self._put(msgspec.structs.replace(rec, fields=new))

    def set_email(self, sid: str, email: str) -> None:
        if sid in self.made_from and sid not in self.listed:
            self.renamed_unseen.add(sid)
        self._put(msgspec.structs.replace(self.contacts[sid], email=email))

    def opt_out(self, sid: str, reason: str = "no thanks", source: str = "Contact") -> None:
        rec = self.contacts[sid]
        perm = PermissionState(
            status="unsubscribed", source=source, reason=reason, changed_at=self.tick()
        )
        self._put(msgspec.structs.replace(rec, permission=perm))

    def opt_in(self, sid: str, source: str = "Contact") -> None:
        rec = self.contacts[sid]
        perm = PermissionState(status="explicit", source=source, changed_at=self.tick())
        self._put(msgspec.structs.replace(rec, permission=perm))

    def join(self, sid: str, list_id: str) -> None:
        rec = self.contacts[sid]
        self._put(msgspec.structs.replace(rec, lists=tuple(sorted({*rec.lists, list_id}))))

    def leave(self, sid: str, list_id: str) -> None:
        rec = self.contacts[sid]
        self._put(msgspec.structs.replace(rec, lists=tuple(x for x in rec.lists if x != list_id)))

    def delete(self, sid: str) -> None:
        self._put(msgspec.structs.replace(self.contacts[sid], deleted=True, lists=()))

    def reject_next(self, record: str, field: str, problem: str) -> None:
        """The next listing returns a record it could not normalise (bad input from the store)."""
        raw = msgspec.json.encode({"id": record, field: "?"}).decode()
        self._rejects.append(Rejected(record=record, field=field, problem=problem, raw=raw))

    def by_email(self, email: str) -> ContactRecord | None:
        for rec in self.contacts.values():
            if rec.email == email:
                return rec
        return None

    # --- ports ----------------------------------------------------------------------------

    async def observe_contacts(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        since = int(resume or 0)
        changed = sorted((s, sid) for sid, s in self.stamps.items() if s > since)
        top = max((s for s, _ in changed), default=since)
        rejects, self._rejects = tuple(self._rejects), []
        if rejects and not changed:
            yield Page(
                request=f"fake {self._store} since={since} page=0",
                contacts=(),
                rejected=rejects,
                content_hash=hashlib.sha256(b"").hexdigest(),
                resume=str(since),
            )
        for n, i in enumerate(range(0, len(changed), self.page_size)):
            if self.listing_fails_after is not None and n >= self.listing_fails_after:
                break
            chunk = changed[i : i + self.page_size]
            recs = tuple(self.contacts[sid] for _, sid in chunk)
            self.listed.update(sid for _, sid in chunk)
            last = i + self.page_size >= len(changed)
            body = msgspec.json.encode(recs)
            yield Page(
                request=f"fake {self._store} since={since} page={i // self.page_size}",
                contacts=recs,
                rejected=rejects if i == 0 else (),
                content_hash=hashlib.sha256(body).hexdigest(),
                resume=str(top if last else chunk[-1][0]),
            )
        if self.listing_fails_after is not None:
            raise RetriableError(f"{self._store}: connection refused (gave up retrying)")

    async def observe_lists(self) -> tuple[str, Sequence[ListRecord]]:
        return "fake lists", list(self.lists.values())

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        if self.fatal is not None:
            self.fatal_calls += 1
            raise FatalError(self.fatal)
        out = []
        for cmd in commands:
            cid = command_id(cmd)
            self.writes.append(cmd)
            if self.fail_next:
                self.fail_next -= 1
                out.append(
                    Outcome(
                        command_id=cid, ok=False, error="503 service unavailable", retriable=True
                    )
                )
                continue
            if self.lose_next:
                self.lose_next -= 1
                out.append(Outcome(command_id=cid, ok=True, store_id=cmd.store_id))
                continue
            out.append(self._apply(cid, cmd))
        return out

    def _find(self, cmd: Command) -> ContactRecord | None:
        if cmd.store_id and cmd.store_id in self.contacts:
            return self.contacts[cmd.store_id]
        return self.by_email(cmd.email)

    def _apply(self, cid: str, cmd: Command) -> Outcome:
        rec = self._find(cmd)
        match cmd:
            case UpsertContact(fields=fields, new_email=new_email, lists=lists):
                if rec is None:
                    if cmd.source_id is None:
                        self.violations.append(f"create of {cmd.email} names no source contact")
                    sid = self.add(cmd.email, lists=lists, **{k: v for k, v in fields.items() if v})
                    self.made_from[sid] = cmd.source_id
                    return Outcome(
                        command_id=cid, ok=True, store_id=sid if self.reports_ids else None
                    )
                if rec.permission.status == "unsubscribed" and lists:
                    self.violations.append(f"upsert added opted-out {rec.email} to lists")
                new = dict(rec.fields)
                for k, v in fields.items():
                    if v is None:
                        new.pop(k, None)
                    else:
                        new[k] = v
                self._put(msgspec.structs.replace(rec, fields=new, email=new_email or rec.email))
            case Unsubscribe(reason=reason, source=source):
                if rec is None:
                    return Outcome(command_id=cid, ok=False, error="404 not found", retriable=True)
                perm = PermissionState(
                    status="unsubscribed", source=source, reason=reason, changed_at=self.tick()
                )
                self._put(msgspec.structs.replace(rec, permission=perm))
            case AddToList(list_id=list_id):
                if rec is None:
                    return Outcome(command_id=cid, ok=False, error="404 not found", retriable=True)
                if rec.permission.status == "unsubscribed":
                    self.violations.append(f"added opted-out {rec.email} to list {list_id}")
                self.join(rec.store_id, list_id)
            case RemoveFromList(list_id=list_id):
                if rec is not None:
                    self.leave(rec.store_id, list_id)
            case DeleteContact():
                if rec is not None:
                    self.delete(rec.store_id)
            case RecordTracking(activities=acts):
                self.tracking.update(acts)
        return Outcome(command_id=cid, ok=True)
