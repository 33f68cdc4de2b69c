"""The outbox: ``command.issued`` is recorded before anything is sent; ``command.applied`` or
``command.failed`` (with the store's own error) after.

A command already applied is never sent again (its id is its content). After a crash, commands
issued without an outcome are sent again at the next start: commands state an end state, so
that is harmless. Failed commands are retried on later cycles with exponential backoff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

import msgspec
import structlog

from engine._aio import gather_or_cancel
from engine._inlist import fetch_in
from engine.commands import (
    TRACKING_KIND,
    AddToList,
    Command,
    Outcome,
    RecordTracking,
    RemoveFromList,
    UpsertContact,
    command_id,
    command_kind,
)
from engine.errors import CcsyncError, FatalError, LogCorruptError, RetriableError
from engine.events import (
    AppliedCommand,
    CommandApplied,
    CommandConfirmed,
    CommandFailed,
    CommandIssued,
    CommandSuperseded,
    Created,
    IssuedCommand,
    Paired,
    batch_key,
    content_id,
)
from engine.log import EventLog, NewEvent, parse_ts
from engine.model import Store
from engine.pairs import app_partners
from engine.ports import CommandSink
from projections.projector import Projector
from projections.schema import UNSETTLED

__all__ = ["Delivered", "Issued", "Outbox", "OutboxStats", "Unsettled", "backoff", "not_sent"]

_log: Final = structlog.get_logger("ccsync.outbox")
BACKOFF_BASE: Final = timedelta(minutes=1)
BACKOFF_MAX: Final = timedelta(hours=6)


class Unsettled(NamedTuple):
    """A command whose effect observation has not confirmed yet: its id, status, the contact
    it is about (its target store and e-mail), its kind and where it was issued."""

    command_id: str
    status: str
    target: Store
    email: str
    kind: str
    issued_position: int


class _UnsettledRow(msgspec.Struct, array_like=True):
    command_id: str
    target: Store
    email: str
    status: str
    attempts: int
    outcome_at: str | None
    kind: str
    issued_position: int


_CHUNK: Final = 2000
# Why a failed tracking record is not sent again as it was
_NO_APP_CONTACT: Final = (
    "its contact has no live app contact (or another one now): its activity is sent when the "
    "contact is paired with one"
)


def _unsettled(rows: list[Any], now: datetime) -> list[Unsettled]:
    out = []
    for row in msgspec.convert(rows, list[_UnsettledRow]):
        if (
            row.status == "issued"
            or (row.status == "applied" and row.outcome_at and parse_ts(row.outcome_at) < now)
            or (row.status == "failed" and _due(row.outcome_at, row.attempts, now))
        ):
            out.append(
                Unsettled(
                    row.command_id, row.status, row.target, row.email, row.kind, row.issued_position
                )
            )
    return out


def _due(outcome_at: str | None, attempts: int, now: datetime) -> bool:
    """Whether a command with this outcome time may be sent again at ``now``."""
    if outcome_at is None:
        return True
    at = parse_ts(outcome_at)
    return at < now and at + backoff(attempts) <= now


def backoff(attempts: int) -> timedelta:
    """Delay before retrying a command that failed ``attempts`` times."""
    delay: timedelta = BACKOFF_BASE * (2 ** max(attempts - 1, 0))
    return min(delay, BACKOFF_MAX)


class OutboxStats(msgspec.Struct):
    issued: dict[str, int] = msgspec.field(default_factory=dict)
    applied: int = 0
    failed: int = 0
    skipped: int = 0  # decided again, but already applied (or waiting for its retry time)
    new_extra: frozenset[str] = frozenset()  # ids of the extra events that were new to the log


class Issued(NamedTuple):
    """Commands recorded as issued and not yet sent (``Outbox.issue`` -> ``Outbox.send``)."""

    todo: list[tuple[str, Command]]
    run_id: str
    stats: OutboxStats


class Delivered(NamedTuple):
    """A batch sent (``Outbox.deliver``) whose outcomes are not yet recorded
    (``Outbox.record``); ``fatal``: the stores whose sink failed fatally, with the error (the
    first is raised once recorded)."""

    issued: Issued
    outcomes: list[tuple[str, Command, Outcome]]
    fatal: dict[Store, FatalError]


class Outbox:
    """Issues, executes and records commands through the stores' CommandSinks."""

    def __init__(
        self, log: EventLog, projector: Projector, sinks: Mapping[Store, CommandSink]
    ) -> None:
        self.log = log
        self.projector = projector
        self.sinks = sinks

    async def issued_since(self, ids: Iterable[str], position: int) -> set[str]:
        """Those of ``ids`` issued after log position ``position``."""
        rows = await fetch_in(
            self.log.connection,
            "SELECT command_id FROM p_commands WHERE issued_position > ? AND command_id IN",
            list(ids),
            (position,),
        )
        return {str(r[0]) for r in rows}

    async def _known(self, ids: Sequence[str]) -> dict[str, tuple[str, int, str | None]]:
        rows = await fetch_in(
            self.log.connection,
            "SELECT command_id, status, attempts, outcome_at FROM p_commands WHERE command_id IN",
            ids,
        )
        return {cid: (status, attempts, at) for cid, status, attempts, at in rows}

    # By (email, status): a contact's settled commands, however many, are skipped in the index.
    # (Named, so that no statistics turn the plan to p_commands_open, which after a first
    # cycle holds every command it applied.)
    _BASE: Final = (
        "SELECT command_id, target, email, status, attempts, outcome_at, kind, issued_position "
        "FROM p_commands c INDEXED BY p_commands_email "
        f"WHERE {UNSETTLED} AND kind != '{TRACKING_KIND}' "
    )

    async def unsettled(self, now: datetime, emails: Iterable[str]) -> list[Unsettled]:
        """Commands to these emails whose effect is not yet confirmed by observation: applied
        before ``now`` (the next observation should show it), issued without an outcome (a
        crash), or failed and past their backoff. The cycle decides their contacts again
        rather than resending them blindly: a stale command must not act on a contact whose
        state has moved (an opted-out contact must not be added to a list because a failed
        add is retried)."""
        conn = self.log.connection
        return _unsettled(await fetch_in(conn, self._BASE + "AND email IN", list(emails)), now)

    async def orphans(
        self, now: datetime, untouched_since: int, after: int
    ) -> tuple[list[Unsettled], int | None]:
        """Unsettled commands whose email no contact touched after ``untouched_since`` holds
        (the touched ones having been handled with their contacts), a page at a time in the
        order they were issued after position ``after``; returns them and the next ``after``
        (None: done)."""
        rows = list(
            await self.log.connection.execute_fetchall(
                "SELECT command_id, target, email, status, attempts, outcome_at, kind, "
                "issued_position FROM p_commands c INDEXED BY p_commands_open "
                f"WHERE {UNSETTLED} AND kind != '{TRACKING_KIND}' "
                "AND issued_position > ? AND NOT EXISTS (SELECT 1 FROM p_contacts p "
                "WHERE p.email = c.email AND p.position > ?) ORDER BY issued_position LIMIT ?",
                (after, untouched_since, _CHUNK),
            )
        )
        return _unsettled(rows, now), (int(rows[-1][7]) if rows else None)

    async def failed_tracking(self, now: datetime, run_id: str) -> list[Command]:
        """Tracking records that failed and are due again (they are data: resent as they are).

        One whose contact has no live app contact now, or another one than it names, is not
        sent again, to fail at every cycle: it is recorded superseded. Its activity goes out
        with the cycle that pairs the contact with a live app contact, if one ever does
        (engine.cycle holds tracking for want of one, and sends it then)."""
        conn = self.log.connection
        rows = await conn.execute_fetchall(
            "SELECT command_id, issued_position, status, attempts, outcome_at FROM p_commands "
            f"INDEXED BY p_commands_open WHERE {UNSETTLED} AND status IN ('issued', 'failed') "
            f"AND kind = '{TRACKING_KIND}'"
        )
        issued = {
            cid: (position, status)
            for cid, position, status, attempts, at in rows
            if status == "issued" or _due(at, attempts, now)
        }
        asked = await self._asked({cid: position for cid, (position, _) in issued.items()})
        due = [
            (cid, status, msgspec.convert(asked[cid], RecordTracking))
            for cid, (_, status) in issued.items()
        ]
        failed = {a.contact_id: c.email for _, st, c in due if st == "failed" for a in c.activities}
        partners = await app_partners(conn, failed) if failed else {}
        resend: list[Command] = []
        gone: list[NewEvent] = []
        for cid, status, cmd in due:
            # Its contact's live app contact, still the one it names (issued before a crash:
            # sent again as it was, as any command is).
            to = {partners.get(a.contact_id) for a in cmd.activities}
            reachable = None not in to and (cmd.store_id is None or to == {cmd.store_id})
            if status == "issued" or reachable:
                resend.append(cmd)
                continue
            ev = CommandSuperseded(store="app", key=cid, run_id=run_id, reason=_NO_APP_CONTACT)
            gone.append(NewEvent(content_id(ev), ev))
        if gone:
            await self.log.append(gone)
            await self.projector.catch_up()
        return resend

    async def _asked(self, issued: Mapping[str, int]) -> dict[str, dict[str, Any]]:
        """What the commands ``issued`` (id -> the position of their issue record) asked, as
        recorded there: each record is cut down to them before it is decoded (a batch holds
        thousands). Raises LogCorruptError if a record is missing."""
        at: dict[int, list[str]] = {}
        for cid, position in issued.items():
            at.setdefault(position, []).append(cid)
        asked: dict[str, dict[str, Any]] = {}
        for r in await self.log.read_commands(at):
            if isinstance(r.event, CommandIssued):
                asked.update(
                    (ic.command_id, ic.command)
                    for ic in r.event.commands
                    if ic.command_id in issued
                )
        missing = issued.keys() - asked.keys()
        if missing:
            first = min(missing)
            raise LogCorruptError(f"command {first} has no issue record at {issued[first]}")
        return asked

    async def replaced(
        self, left: Sequence[Unsettled], decided: Iterable[tuple[str, Command]]
    ) -> dict[str, str]:
        """Those of ``left`` (unsettled commands that deciding again did not produce) whose
        action a new decision asks for again under another id, with that id: the store does
        not show what it was asked (it lost the write, or it was undone), and the decision was
        made again on the contact's newer observed state. Such a command was not confirmed by
        observation: it is superseded by its successor.

        Only the commands with a new decision of the same kind, for the same contact and
        store, are read back from the log (their issue records): a handful, however many
        commands a cycle confirms."""
        if not left:
            return {}
        new: dict[tuple[str, str, str], list[tuple[str, Command]]] = {}
        for cid, cmd in decided:
            new.setdefault((cmd.target, cmd.email, command_kind(cmd)), []).append((cid, cmd))
        candidates = [u for u in left if (u.target, u.email, u.kind) in new]
        if not candidates:
            return {}
        asked = await self._asked({u.command_id: u.issued_position for u in candidates})
        out = {}
        for u in candidates:
            old = asked[u.command_id]
            successor = next(
                (cid for cid, cmd in new[u.target, u.email, u.kind] if _repeats(old, cmd)), None
            )
            if successor is not None:
                out[u.command_id] = successor
        return out

    @staticmethod
    def settled(
        unsettled: Iterable[Unsettled], run_id: str, replaced: Mapping[str, str] | None = None
    ) -> list[NewEvent]:
        """The events that record what became of commands that deciding again did not
        produce: superseded when failed (no longer wanted) or ``replaced`` (asked again by a
        new decision: see ``replaced``), else confirmed (applied, or issued before a crash:
        observation shows the stores agree), in one batch event per store. The caller appends
        them (the cycle, with its next issue records)."""
        replaced = replaced or {}
        settled: list[NewEvent] = []
        confirmed: dict[Store, list[str]] = {}
        for u in unsettled:
            successor = replaced.get(u.command_id)
            if u.status == "failed" or successor is not None:
                reason = (
                    "the store does not show it: decided again on the contact's newer state"
                    if successor is not None
                    else "not decided again on the stores' current state"
                )
                ev = CommandSuperseded(
                    store=u.target,
                    key=u.command_id,
                    run_id=run_id,
                    reason=reason,
                    successor=successor,
                )
                settled.append(NewEvent(content_id(ev), ev))
            else:
                confirmed.setdefault(u.target, []).append(u.command_id)
        for store, ids in confirmed.items():
            batch = CommandConfirmed(
                store=store, key=batch_key(ids), run_id=run_id, command_ids=tuple(ids)
            )
            settled.append(NewEvent(content_id(batch), batch))
        return settled

    async def _apply(
        self,
        target: Store,
        todo: Sequence[tuple[str, Command]],
        down: Mapping[Store, CcsyncError] | None = None,
    ) -> tuple[list[tuple[str, Command, Outcome]], FatalError | None]:
        """Send ``target``'s commands; an error of the whole call fails each of them."""
        batch = [(cid, c) for cid, c in todo if c.target == target]
        fatal = None
        if down and target in down:
            error = not_sent(down[target])
            return [
                (cid, c, Outcome(command_id=cid, ok=False, error=error, retriable=True))
                for cid, c in batch
            ], None
        try:
            results = await self.sinks[target].apply([c for _, c in batch])
        except CcsyncError as exc:
            retriable = isinstance(exc, RetriableError) or not isinstance(exc, FatalError)
            results = [
                Outcome(command_id=cid, ok=False, error=str(exc), retriable=retriable)
                for cid, _ in batch
            ]
            if isinstance(exc, FatalError):
                fatal = exc
        return [(cid, cmd, res) for (cid, cmd), res in zip(batch, results, strict=True)], fatal

    async def execute(self, commands: Sequence[Command], run_id: str, now: datetime) -> OutboxStats:
        """Issue and send ``commands`` in one step (``issue`` then ``send``)."""
        return await self.send(await self.issue(commands, run_id, now))

    async def issue(
        self,
        commands: Sequence[Command],
        run_id: str,
        now: datetime,
        *,
        extra: Sequence[NewEvent] = (),
        ids: Sequence[str] | None = None,
        in_flight: AbstractSet[str] = frozenset(),
    ) -> Issued:
        """Record ``commands`` as issued (``send`` sends them); ``extra`` events (the
        reconciler's links and blocked decisions) are appended with the issue records;
        ``ids``, when given, are the commands' ids (the caller computed them already);
        ``in_flight`` are ids issued and being sent right now, which are left to that send.

        A decided command is issued unless it was applied, or failed, within its backoff; one
        applied before this cycle that is decided again (the store never reflected it) is sent
        again after its backoff. A tracking record delivered (the app took it) is not sent
        again: one decided again is the same data (a cycle that ended before its checkpoint).
        """
        stats = OutboxStats()
        decided = dict(
            zip(ids, commands, strict=True)
            if ids is not None
            else ((command_id(c), c) for c in commands)
        )
        for cid in in_flight & decided.keys():
            del decided[cid]
            stats.skipped += 1
        known = await self._known(list(decided))
        todo: list[tuple[str, Command]] = []
        for cid, cmd in decided.items():
            status = known.get(cid)
            if status is not None:
                state, attempts, at = status
                if state == "delivered" or (
                    state in ("applied", "failed") and not _due(at, attempts, now)
                ):
                    stats.skipped += 1
                    continue
            todo.append((cid, cmd))
        by_target: dict[Store, list[IssuedCommand]] = {}
        for cid, cmd in todo:
            kind = command_kind(cmd)
            by_target.setdefault(cmd.target, []).append(
                IssuedCommand(command_id=cid, kind=kind, command=msgspec.to_builtins(cmd))
            )
            stats.issued[kind] = stats.issued.get(kind, 0) + 1
        issued = []
        for target, cmds in by_target.items():
            issue = CommandIssued(
                store=target,
                key=batch_key(c.command_id for c in cmds),
                run_id=run_id,
                commands=tuple(cmds),
            )
            # The id hashes the batch without its commands: its key already hashes their ids,
            # which hash their content (encoding every command again cost a tenth of a second
            # per 10,000).
            issued.append(NewEvent(content_id(msgspec.structs.replace(issue, commands=())), issue))
        if issued or extra:
            result = await self.log.append([*extra, *issued])
            stats.new_extra = frozenset(result.new_ids) & {e.id for e in extra}
            await self.projector.catch_up()
        return Issued(todo, run_id, stats)

    async def send(self, issued: Issued) -> OutboxStats:
        """Send what ``issue`` recorded and record each command's outcome."""
        return await self.record(await self.deliver(issued))

    async def deliver(
        self, issued: Issued, down: Mapping[Store, CcsyncError] | None = None
    ) -> Delivered:
        """Send what ``issue`` recorded; ``record`` records the outcomes. (The cycle sends one
        batch while it records the outcomes of the batch before.) Commands to a store that is
        ``down`` (it failed earlier in the cycle) are not sent: they fail, retriable."""
        if not issued.todo:
            return Delivered(issued, [], {})
        # The stores are written concurrently: one's writes (network round trips, activities
        # polled to completion) need not wait for the other's.
        stores: tuple[Store, ...] = ("ctct", "app")
        targets = [t for t in stores if any(c.target == t for _, c in issued.todo)]
        parts = await gather_or_cancel(*(self._apply(t, issued.todo, down) for t in targets))
        outcomes = [o for part, _ in parts for o in part]
        fatal = {t: f for t, (_, f) in zip(targets, parts, strict=True) if f is not None}
        return Delivered(issued, outcomes, fatal)

    async def record(self, delivered: Delivered, *, raise_fatal: bool = True) -> OutboxStats:
        """Record the outcomes of a delivered batch; then raise its fatal error, if any (unless
        the caller handles ``delivered.fatal`` itself)."""
        issued, outcomes, fatal = delivered
        stats, run_id = issued.stats, issued.run_id
        if not outcomes:
            return stats
        records = []
        applied: dict[Store, list[AppliedCommand]] = {}
        for cid, cmd, res in outcomes:
            store = cmd.target
            if res.ok:
                paired, made = _made(cmd, res)
                applied.setdefault(store, []).append(
                    AppliedCommand(command_id=cid, detail=res.detail, paired=paired, created=made)
                )
                stats.applied += 1
                continue
            stats.failed += 1
            records.append(_failed(cid, cmd, run_id, res.error or "failed", res.retriable))
        for store, done in applied.items():
            ev = CommandApplied(
                store=store,
                key=batch_key(a.command_id for a in done),
                run_id=run_id,
                applied=tuple(done),
            )
            records.append(NewEvent(content_id(ev), ev))
        await self.log.append(records)
        await self.projector.catch_up()
        if fatal and raise_fatal:
            raise next(iter(fatal.values()))
        return stats

    async def abandon(self, issued: Issued, why: str) -> None:
        """Record issued commands that will not be sent in this run as failed (retriable: a
        later cycle decides them again)."""
        records = [_failed(cid, cmd, issued.run_id, why, True) for cid, cmd in issued.todo]
        issued.stats.failed += len(records)
        if records:
            await self.log.append(records)
            await self.projector.catch_up()


def _made(cmd: Command, res: Outcome) -> tuple[Paired | None, Created | None]:
    """What a create made, for its outcome: the new contact (its id, as the store gave it)
    paired with the one it was made from; or, where the store did not say the id (Constant
    Contact's bulk import, through which ccsync creates contacts there), the one it was made
    from and the address, by which the listing that shows the new contact pairs it.

    Recorded in the outcome rather than as an ``identity.linked`` of its own: an event per
    created contact cost an initial sync of 100,000 contacts 6 s (a stream each)."""
    if not isinstance(cmd, UpsertContact) or cmd.store_id is not None or not cmd.source_id:
        return None, None
    if res.store_id is None:
        return None, Created(cmd.source_id, cmd.email)
    if cmd.target == "app":
        return Paired(cmd.source_id, res.store_id, cmd.email), None
    return Paired(res.store_id, cmd.source_id, cmd.email), None


def _repeats(old: Mapping[str, Any], new: Command) -> bool:
    """Whether ``new`` asks again for some of what the issued command ``old`` (its recorded
    form, of the same kind, store and contact) asked for."""
    match new:
        case AddToList(list_id=list_id) | RemoveFromList(list_id=list_id):
            return bool(old.get("list_id") == list_id)
        case UpsertContact(store_id=None):  # a create asked again: the store has no contact
            return old.get("store_id") is None
        case UpsertContact(fields=fields, new_email=new_email):
            was = old.get("fields") or {}
            return (new_email is not None and old.get("new_email") == new_email) or any(
                k in was and was[k] == v for k, v in fields.items()
            )
        case _:  # an unsubscribe or a delete: one end state
            return True


def not_sent(cause: BaseException) -> str:
    """The error recorded for a command that was issued but not sent: a batch before it failed
    (retriable: a later cycle decides its contact again)."""
    return f"not sent: an earlier batch failed: {cause}"


def _failed(cid: str, cmd: Command, run_id: str, error: str, retriable: bool) -> NewEvent:
    _log.warning(
        "outbox.command_failed",
        command_id=cid,
        kind=command_kind(cmd),
        target=cmd.target,
        email=cmd.email,
        error=error,
    )
    ev = CommandFailed(store=cmd.target, key=cid, run_id=run_id, error=error, retriable=retriable)
    return NewEvent(content_id(ev), ev)
