"""Compliance queries over the log's projections: each opt-out's history, and violations.

An *origin* is an opt-out made in one store (by the contact, or the account). Its history: when
it happened at the source, when ccsync first saw it, the Unsubscribe command that carried it to
the other store, when that was applied, and when re-observation of the other store confirmed it.
An opt-out that the other store shows after such a command is that confirmation, not an origin.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Final, Literal, TypeVar

import aiosqlite
import msgspec

from engine._inlist import fetch_in
from engine.commands import UNSUBSCRIBE_KIND
from engine.events import (
    CommandApplied,
    CommandConfirmed,
    CommandFailed,
    CommandIssued,
    CommandSuperseded,
    ContactChanged,
    ContactDeleted,
    ContactObserved,
    ContactRestored,
    DecisionBlocked,
    EventBase,
    IdentityLinked,
    MembershipAdded,
    MembershipRemoved,
    PermissionChanged,
    TrackingRecorded,
)
from engine.log import EventLog, Recorded, format_ts, parse_ts
from engine.model import normalise_email
from engine.pairs import app_links, app_partners
from projections.runner import decode_contact, load_contacts, projected_position

__all__ = [
    "Blocked",
    "HeldTracking",
    "HistoryLine",
    "OptOut",
    "Rejected",
    "UnpropagatedWatch",
    "Violation",
    "audit_optouts",
    "blocked_decisions",
    "contact_history",
    "find_violations",
    "held_tracking",
    "oldest_unpropagated_optout",
    "rejected_records",
]

State = Literal["confirmed", "applied", "pending", "failed", "already", "no-contact"]


class OptOut(msgspec.Struct, kw_only=True):
    """One opt-out and how it reached the other store."""

    email: str
    store: str  # where it happened
    happened_at: str | None  # the source's own time
    source: str | None  # Contact (their own action) or Account
    reason: str | None
    campaign_activity_id: str | None
    seen_at: str  # when ccsync first recorded it
    seen_position: int
    state: State = "pending"
    command_id: str | None = None
    issued_at: str | None = None
    applied_at: str | None = None
    confirmed_at: str | None = None
    error: str | None = None
    latency_seconds: float | None = None  # from happening (or ccsync's start) to confirmation


class Violation(msgspec.Struct, kw_only=True):
    kind: Literal["not-propagated", "late", "send-after-optout"]
    email: str
    detail: str
    at: str | None = None


class _Perm(msgspec.Struct, array_like=True):
    position: int
    store: str
    email: str
    source: str | None
    reason: str | None
    source_time: str | None
    campaign_activity_id: str | None
    recorded_at: str
    old_status: str | None


class _Cmd(msgspec.Struct, array_like=True):
    email: str
    command_id: str
    target: str
    status: str
    issued_position: int
    issued_at: str
    outcome_at: str | None
    confirmed_at: str | None
    error: str | None
    superseded_by: str | None


def _carrier(cmds: list[_Cmd], first: _Cmd) -> _Cmd:
    """The command that carried what ``first`` was to carry: ``first``, or, when the store
    did not show it and a new decision asked again, its successor (and so on)."""
    by_id = {c.command_id: c for c in cmds}
    seen = {first.command_id}
    carrier = first
    while carrier.status == "superseded" and carrier.superseded_by in by_id:
        nxt = by_id[carrier.superseded_by]
        if nxt.command_id in seen:
            break
        seen.add(nxt.command_id)
        carrier = nxt
    return carrier


async def _rows(
    conn: aiosqlite.Connection, sql: str, args: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await conn.execute_fetchall(sql, args)]


async def first_run_started(log: EventLog) -> str | None:
    rows = await _rows(log.connection, "SELECT MIN(started_at) FROM p_runs")
    return str(rows[0][0]) if rows and rows[0][0] else None


_PERMS: Final = (
    "SELECT position, store, email, source, reason, source_time, campaign_activity_id, "
    "recorded_at, old_status FROM p_permissions WHERE new_status = 'unsubscribed'"
)
_CMDS: Final = (
    "SELECT email, command_id, target, status, issued_position, issued_at, outcome_at, "
    f"confirmed_at, error, superseded_by FROM p_commands WHERE kind = '{UNSUBSCRIBE_KIND}'"
)


async def audit_optouts(
    log: EventLog,
    *,
    email: str | None = None,
    since: datetime | None = None,
    emails: Collection[str] | None = None,
) -> list[OptOut]:
    """Every opt-out origin (optionally of one email or of ``emails``, or seen since a time),
    oldest first. An email's origins depend only on that email's rows, so those of a few
    emails cost what those emails hold."""
    conn = log.connection
    if email:
        emails = [email]
    if emails is None:
        perm_rows = await _rows(conn, f"{_PERMS} ORDER BY position")
        cmd_rows = await _rows(conn, f"{_CMDS} ORDER BY issued_position")
    else:
        wanted = sorted(set(emails))
        perm_rows = await _by_emails(conn, f"{_PERMS} AND email IN", wanted)
        cmd_rows = await _by_emails(conn, f"{_CMDS} AND email IN", wanted)
    perms = sorted(msgspec.convert(perm_rows, list[_Perm]), key=lambda p: p.position)
    cmds: dict[str, list[_Cmd]] = defaultdict(list)
    for c in sorted(msgspec.convert(cmd_rows, list[_Cmd]), key=lambda c: c.issued_position):
        cmds[c.email].append(c)
    start = await first_run_started(log)
    uncarried: list[OptOut] = []  # classified below, in one batched lookup
    origins: list[OptOut] = []
    open_by_email: dict[str, list[OptOut]] = defaultdict(list)
    for p in perms:
        pending = [
            o
            for o in open_by_email[p.email]
            if o.store != p.store
            and o.command_id is not None
            and o.confirmed_at is None
            and any(
                c.command_id == o.command_id and c.issued_position < p.position
                for c in cmds[p.email]
            )
        ]
        if pending:
            o = pending[0]
            o.confirmed_at = p.recorded_at
            o.state = "confirmed"
            o.latency_seconds = _latency(o, start)
            continue
        if p.old_status == "unsubscribed":
            # Still unsubscribed, its reason, source or time restated (Constant Contact
            # stamps an email address anew when the address changes): not an opt-out of its
            # own, which the other store would be owed again and never be shown.
            continue
        o = OptOut(
            email=p.email,
            store=p.store,
            happened_at=p.source_time,
            source=p.source,
            reason=p.reason,
            campaign_activity_id=p.campaign_activity_id,
            seen_at=p.recorded_at,
            seen_position=p.position,
        )
        other = "app" if p.store == "ctct" else "ctct"
        carrier = next(
            (c for c in cmds[p.email] if c.target == other and c.issued_position > p.position),
            None,
        )
        if carrier is not None:
            carrier = _carrier(cmds[p.email], carrier)
            o.command_id, o.issued_at = carrier.command_id, carrier.issued_at
            o.error = carrier.error if carrier.status == "failed" else None
            if carrier.status in ("applied", "confirmed"):
                o.applied_at, o.state = carrier.outcome_at, "applied"
            elif carrier.status == "failed":
                o.state = "failed"
        else:
            uncarried.append(o)
        origins.append(o)
        open_by_email[p.email].append(o)
    await _classify_uncarried(conn, uncarried)
    if since is not None:
        origins = [o for o in origins if parse_ts(o.seen_at) >= since]
    return origins


async def _by_emails(
    conn: aiosqlite.Connection, sql: str, emails: list[str]
) -> list[tuple[object, ...]]:
    """Rows of ``sql`` (ending in ``email IN``) for ``emails``, in chunks of bound parameters."""
    return [tuple(r) for r in await fetch_in(conn, sql, emails)]


async def _classify_uncarried(conn: aiosqlite.Connection, origins: list[OptOut]) -> None:
    """An opt-out no command carried: the other store has no live contact with the address
    ("no-contact": never there, or deleted there; one that holds it later is decided then), or
    had it unsubscribed when it was seen, or has unsubscribed it since on its own ("already":
    both stores opted out between two cycles); else it is still "pending"."""
    emails = sorted({o.email for o in origins})
    live = {
        (str(s), str(e))
        for s, e, state in await _by_emails(
            conn, "SELECT store, email, state FROM p_contacts WHERE email IN", emails
        )
        if isinstance(state, bytes) and not decode_contact(state).deleted
    }
    history: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for store, email, pos, status in await _by_emails(
        conn,
        "SELECT store, email, position, new_status FROM p_permissions WHERE email IN",
        emails,
    ):
        history[(str(store), str(email))].append((int(pos), str(status)))  # type: ignore[call-overload]
    for o in origins:
        other = "app" if o.store == "ctct" else "ctct"
        if (other, o.email) not in live:
            o.state = "no-contact"
            continue
        rows = sorted(history[(other, o.email)])
        before = [h for h in rows if h[0] < o.seen_position]
        if (before and before[-1][1] == "unsubscribed") or (rows and rows[-1][1] == "unsubscribed"):
            o.state = "already"


def _effective_start(o: OptOut, start: str | None) -> datetime:
    """Propagation is owed from when it happened, or from ccsync's first run if later."""
    t = parse_ts(o.happened_at) if o.happened_at else parse_ts(o.seen_at)
    if start is not None:
        t = max(t, parse_ts(start))
    return t


def _latency(o: OptOut, start: str | None) -> float | None:
    if o.confirmed_at is None:
        return None
    return (parse_ts(o.confirmed_at) - _effective_start(o, start)).total_seconds()


async def find_violations(log: EventLog, now: datetime, bound: timedelta) -> list[Violation]:
    """Opt-outs not propagated within ``bound``, and sends recorded after an opt-out."""
    start = await first_run_started(log)
    out: list[Violation] = []
    origins = await audit_optouts(log)
    for o in origins:
        if o.state in ("already", "no-contact"):
            continue
        begin = _effective_start(o, start)
        if o.confirmed_at is None and now - begin > bound:
            out.append(
                Violation(
                    kind="not-propagated",
                    email=o.email,
                    at=o.seen_at,
                    detail=f"opted out in {o.store} at {o.happened_at or o.seen_at}; "
                    f"not confirmed in the other store after {now - begin} "
                    f"(state {o.state}{': ' + o.error if o.error else ''})",
                )
            )
        elif o.confirmed_at is not None and parse_ts(o.confirmed_at) - begin > bound:
            out.append(
                Violation(
                    kind="late",
                    email=o.email,
                    at=o.confirmed_at,
                    detail=f"opted out in {o.store} at {o.happened_at or o.seen_at}; "
                    f"confirmed only at {o.confirmed_at}",
                )
            )
    out += await _sends_after_optout(log, origins)
    return out


async def _sends_after_optout(log: EventLog, origins: list[OptOut]) -> list[Violation]:
    conn = log.connection
    out: list[Violation] = []
    by_email: dict[str, list[OptOut]] = defaultdict(list)
    for o in origins:
        by_email[o.email].append(o)
    emails = sorted(by_email)
    sends_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for email, sent_at, campaign in await _by_emails(
        conn,
        "SELECT email, created_time, campaign_activity_id FROM p_tracking "
        "WHERE kind = 'send' AND email IN",
        emails,
    ):
        sends_of[str(email)].append((str(sent_at), str(campaign)))
    optins_of: dict[str, list[str]] = defaultdict(list)
    for email, when in await _by_emails(
        conn,
        "SELECT email, source_time FROM p_permissions WHERE new_status IN "
        "('explicit', 'implicit') AND source_time IS NOT NULL AND email IN",
        emails,
    ):
        optins_of[str(email)].append(str(when))
    for email, opts in by_email.items():
        sends = sorted(sends_of.get(email, ()))
        optins = optins_of.get(email, [])
        for sent_at, campaign in sends:
            for o in opts:
                t = o.happened_at or o.seen_at
                if sent_at > t and not any(t < r < sent_at for r in optins):
                    out.append(
                        Violation(
                            kind="send-after-optout",
                            email=email,
                            at=sent_at,
                            detail=f"campaign activity {campaign} sent at {sent_at}, "
                            f"after the opt-out in {o.store} at {t}",
                        )
                    )
                    break
    return out


async def oldest_unpropagated_optout(log: EventLog, now: datetime) -> float | None:
    """Seconds since the oldest opt-out that the other store does not yet confirm (None: none)."""
    return await UnpropagatedWatch().oldest(log, now)


_UNSETTLED: Final = frozenset({"pending", "applied", "failed"})


class UnpropagatedWatch:
    """The oldest unpropagated opt-out, measured again and again (the daemon, after each
    cycle) at the cost of what changed in between rather than of every opt-out ever seen.

    The first measurement audits every opt-out. Each later one audits only the emails whose
    rows may have moved since the last: those that still had an opt-out in flight, and those
    of the contacts and permission changes projected since. That is exact, because an
    email's origins depend only on that email's rows (``audit_optouts``), and an origin the
    last measurement found settled (confirmed, already opted out, no contact in the other
    store) becomes unsettled only through a new row of its email: a contact appearing in the
    other store, or a permission change. Commands alone never unsettle one: a new carrier of
    an ``already`` or ``no-contact`` origin follows such a row.
    """

    def __init__(self, *, full_above: float = 0.1) -> None:
        # Above this share of the projected contacts moving, audit every opt-out instead.
        self.full_above = full_above
        self._after: int | None = None  # projected position of the last measurement
        self._open: set[str] = set()  # emails with an unsettled origin then
        self.unsettled: list[OptOut] = []  # as of the last measurement, oldest seen first

    async def oldest(self, log: EventLog, now: datetime) -> float | None:
        conn = log.connection
        mark = await projected_position(conn)
        emails: set[str] | None = None  # None: every opt-out
        # (A lower mark: the projections were rebuilt. Many contacts moved, as in the cycle
        # after an initial sync: one pass over every opt-out is cheaper than looking up that
        # many emails a chunk at a time.)
        if (
            self._after is not None
            and mark >= self._after
            and await _moved(conn, self._after) <= await _contacts(conn) * self.full_above
        ):
            emails = self._open | await _emails_since(conn, self._after)
        if emails is None:
            origins = await audit_optouts(log)
        else:
            origins = await audit_optouts(log, emails=emails) if emails else []
        unsettled = [o for o in origins if o.confirmed_at is None and o.state in _UNSETTLED]
        unsettled.sort(key=lambda o: o.seen_position)
        self._after, self._open, self.unsettled = mark, {o.email for o in unsettled}, unsettled
        if not unsettled:
            return None
        start = await first_run_started(log)
        return max((now - _effective_start(o, start)).total_seconds() for o in unsettled)


async def _contacts(conn: aiosqlite.Connection) -> int:
    """At least the number of projected contacts (their largest rowid: no scan)."""
    rows = await _rows(conn, "SELECT MAX(rowid) FROM p_contacts")
    return _int(rows[0][0])


async def _moved(conn: aiosqlite.Connection, position: int) -> int:
    """How many projected contacts moved after ``position`` (counted in the position index)."""
    rows = await _rows(conn, "SELECT COUNT(*) FROM p_contacts WHERE position > ?", (position,))
    return _int(rows[0][0])


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


async def _emails_since(conn: aiosqlite.Connection, position: int) -> set[str]:
    """Emails of the contacts and permission changes projected after ``position`` (each read
    through its position key or index). (A permission change moves its contact's position
    too, so the first part only guards that rule.)"""
    rows = await _rows(
        conn,
        "SELECT email FROM p_permissions WHERE position > ?1 "
        "UNION SELECT email FROM p_contacts WHERE position > ?1",
        (position,),
    )
    return {str(r[0]) for r in rows}


class HistoryLine(msgspec.Struct, kw_only=True):
    """One recorded fact about a person, from either store or from the engine."""

    position: int
    recorded_at: str
    store: str
    type: str
    summary: str


def _summarise(event: EventBase, command_id: str = "") -> str:
    """One line about ``event`` (for a batch of commands: about ``command_id`` in it)."""
    cid = (command_id or event.key)[:12]
    match event:
        case ContactObserved(contact=c):
            lists = ",".join(c.lists) or "-"
            return f"first seen: {c.email} permission={c.permission.status} lists={lists}"
        case ContactChanged(changes=changes) if not changes:
            return "modified in the store; no synced field differs"
        case ContactChanged(changes=changes):
            return "; ".join(f"{k}: {v.old!r} -> {v.new!r}" for k, v in changes.items())
        case PermissionChanged(old=old, new=new):
            by = f" by {new.source}" if new.source else ""
            why = f" ({new.reason})" if new.reason else ""
            return f"permission {old.status if old else '-'} -> {new.status}{by}{why}"
        case MembershipAdded(list_id=lst) | MembershipRemoved(list_id=lst):
            verb = "joined" if isinstance(event, MembershipAdded) else "left"
            return f"{verb} list {lst}"
        case ContactDeleted() | ContactRestored():
            return "deleted" if isinstance(event, ContactDeleted) else "restored"
        case TrackingRecorded(activity=a):
            return f"{a.kind} in campaign activity {a.campaign_activity_id} at {a.created_time}"
        case CommandIssued(commands=issued):
            for ic in issued:
                if ic.command_id.startswith(cid):
                    shown = {
                        k: v for k, v in ic.command.items() if k not in ("kind", "target", "basis")
                    }
                    return f"command {cid} issued: {ic.kind} {shown}"
            return f"{len(issued)} commands issued"
        case CommandApplied(applied=applied) if command_id:
            done = next((a for a in applied if a.command_id == command_id), None)
            if done is not None and done.paired is not None:
                p = done.paired
                return (
                    f"command {cid} applied: created, paired Constant Contact {p.ctct_id} "
                    f"with app contact {p.app_id}"
                )
            if done is not None and done.created is not None:
                made = done.created
                source = "app" if event.store == "ctct" else "Constant Contact"
                return (
                    f"command {cid} applied: created from {source} contact {made.source_id}; "
                    f"the store did not say its id: paired when a listing shows {made.email}"
                )
            return f"command {cid} applied"
        case CommandApplied() | CommandConfirmed():
            verb = "applied" if isinstance(event, CommandApplied) else "confirmed by observation"
            return f"command {cid} {verb}"
        case CommandFailed(error=error):
            return f"command {event.key[:12]} failed: {error}"
        case CommandSuperseded(reason=reason, successor=successor):
            by = f", by command {successor[:12]}" if successor else ""
            return f"command {event.key[:12]} superseded: {reason}{by}"
        case DecisionBlocked(action=action, reason=reason):
            return f"blocked: {action}: {reason}"
        case IdentityLinked(app_id=app_id):
            return f"paired Constant Contact {event.key} with app contact {app_id}"
        case _:
            return event.__struct_config__.tag  # type: ignore[return-value]


def _line(r: Recorded, command_id: str = "") -> HistoryLine:
    return HistoryLine(
        position=r.position,
        recorded_at=format_ts(r.recorded_at),
        store=r.event.store,
        type=str(r.event.__struct_config__.tag),
        summary=_summarise(r.event, command_id),
    )


DECISIONS_OF: Final = "SELECT store_key FROM p_decisions WHERE email = ?"


async def contact_history(log: EventLog, email: str) -> list[HistoryLine]:
    """Everything recorded about one address, across both stores, in log order: the events
    of the contacts that hold it or are paired with one that does, and the commands decided
    under any address those contacts had (a command names the address of its time)."""
    conn = log.connection
    ids = await _rows(conn, "SELECT store, store_id FROM p_contacts WHERE email = ?", (email,))
    links = await _rows(
        conn,
        "SELECT ctct_id, app_id FROM p_links WHERE email = ? OR ctct_id IN "
        "(SELECT store_id FROM p_contacts WHERE store = 'ctct' AND email = ?) OR app_id IN "
        "(SELECT store_id FROM p_contacts WHERE store = 'app' AND email = ?)",
        (email, email, email),
    )
    streams = {f"{s}:contact:{i}" for s, i in ids}
    for c, a in links:
        streams |= {f"ctct:contact:{c}", f"app:contact:{a}", f"ctct:link:{c}"}
    streams |= {f"ctct:tracking:{i}" for s, i in ids if s == "ctct"}
    out: list[HistoryLine] = []
    addresses = {email}
    for r in await log.read_streams(streams):
        out.append(_line(r))
        addresses |= _addresses(r.event)
    cmds = await _by_emails(
        conn,
        "SELECT command_id, target, issued_position, outcome_position, confirmed_position "
        "FROM p_commands WHERE email IN",
        sorted(addresses),
    )
    # Failures and supersessions are recorded per command (its own stream); issues, outcomes
    # and confirmations in batches, found through the positions the projection kept: the last
    # send's in the command's row, the earlier ones' (a command sent again) in p_command_sends.
    streams = {f"{t}:command:{c}" for c, t, *_ in cmds}
    sends = await _by_emails(
        conn,
        "SELECT s.command_id, c.target, s.issued_position, s.outcome_position "
        "FROM p_command_sends s JOIN p_commands c USING (command_id) WHERE c.email IN",
        sorted(addresses),
    )
    in_batches: dict[int, list[str]] = {}
    for cid, _, *positions in [*cmds, *sends]:
        for p in positions:
            if isinstance(p, int):
                in_batches.setdefault(p, []).append(str(cid))
    decisions = await _rows(conn, DECISIONS_OF, (email,))
    streams |= {f"engine:decision:{k}" for (k,) in decisions}
    for r in await log.read_streams(streams):
        if isinstance(r.event, DecisionBlocked) and r.event.email != email:
            continue
        out.append(_line(r))
    batched = (CommandIssued, CommandApplied, CommandConfirmed)
    for r in await log.read_commands(in_batches):
        if not isinstance(r.event, batched):
            continue  # a per-command event, already read with its stream
        for cid in in_batches[r.position]:
            if r.event.key == cid:
                continue  # an event of an older log: one command, read with its stream
            out.append(_line(r, cid))
    out.sort(key=lambda h: h.position)
    return out


def _addresses(event: EventBase) -> set[str]:
    """The addresses a contact event shows the contact holding (normalised)."""
    match event:
        case ContactObserved(contact=c):
            return {normalise_email(c.email)}
        case ContactChanged(changes=changes) if "email" in changes:
            change = changes["email"]
            return {normalise_email(e) for e in (change.old, change.new) if e}
        case _:
            return set()


class Blocked(msgspec.Struct, kw_only=True):
    """An action the reconciler refused for consent (``decision.blocked``): on which store's
    contact, what it would have done, and why not."""

    position: int
    recorded_at: str
    store: str
    contact_id: str
    email: str
    action: str
    reason: str


class Rejected(msgspec.Struct, kw_only=True):
    """A record a store returned that ccsync could not take (``record.rejected``): the record,
    the field, and what was wrong with it. What was observed is in the event's payload."""

    position: int
    recorded_at: str
    store: str
    record: str
    field: str
    problem: str


_Listed = TypeVar("_Listed", bound=msgspec.Struct)


def _where(equal: dict[str, object | None], since: datetime | None) -> tuple[str, list[object]]:
    """A WHERE clause: each column of ``equal`` whose value is not None equals it, and
    ``recorded_at`` is at or after ``since``; with its parameters."""
    terms = [f"{column} = ?" for column, value in equal.items() if value is not None]
    args: list[object] = [value for value in equal.values() if value is not None]
    if since is not None:
        terms.append("recorded_at >= ?")
        args.append(format_ts(since))
    return ("WHERE " + " AND ".join(terms) if terms else ""), args


async def _listing(
    log: EventLog, cls: type[_Listed], select: str, table: str, where: tuple[str, list[object]]
) -> list[_Listed]:
    """Rows of ``table`` as ``cls``, oldest first: ``select`` yields ``cls``'s fields in order."""
    clause, args = where
    rows = await _rows(
        log.connection, f"SELECT {select} FROM {table} {clause} ORDER BY position", tuple(args)
    )
    names = cls.__struct_fields__
    return [msgspec.convert(dict(zip(names, r, strict=True)), cls) for r in rows]


async def blocked_decisions(
    log: EventLog, *, email: str | None = None, since: datetime | None = None
) -> list[Blocked]:
    """Every blocked decision (of one email, or recorded since a time), oldest first."""
    # (``store_key`` is ``store:contact id``; a contact id may hold colons, the store not.)
    split = (
        "substr(store_key, 1, instr(store_key, ':') - 1), "
        "substr(store_key, instr(store_key, ':') + 1)"
    )
    select = f"position, recorded_at, {split}, email, action, reason"
    return await _listing(log, Blocked, select, "p_decisions", _where({"email": email}, since))


async def rejected_records(
    log: EventLog, *, store: str | None = None, since: datetime | None = None
) -> list[Rejected]:
    """Every rejected record (of one store, or recorded since a time), oldest first."""
    select = "position, recorded_at, store, record, field, problem"
    return await _listing(log, Rejected, select, "p_rejected", _where({"store": store}, since))


class HeldTracking(msgspec.Struct, kw_only=True):
    """A Constant Contact contact whose tracking activity has no live app contact to go to, so
    the cycle holds it (engine.cycle): the log and ``p_tracking`` keep it, and it goes to the
    app with the cycle that pairs the contact with a live app contact, if one ever does."""

    contact_id: str
    email: str
    activities: int
    first_at: str
    last_at: str
    reason: str


_HELD_CHUNK: Final = 1_000
# A page of the contacts with tracking, in id order through p_tracking's unique index, with the
# address each has now in Constant Contact (or, for one no longer listed, its activity's).
_TRACKED: Final = (
    "SELECT t.contact_id, COALESCE((SELECT c.email FROM p_contacts c WHERE c.store = 'ctct' "
    "AND c.store_id = t.contact_id), MAX(t.email)), COUNT(*), MIN(t.created_time), "
    "MAX(t.created_time) FROM p_tracking t WHERE t.store = 'ctct' AND t.contact_id > ? "
    "GROUP BY t.contact_id ORDER BY t.contact_id LIMIT ?"
)


async def held_tracking(log: EventLog) -> list[HeldTracking]:
    """Every contact whose tracking is held now, by Constant Contact id, with why: its app
    contact was deleted; or it was deleted in Constant Contact before ccsync created it in the
    app (so ccsync never will); or no app contact holds its address (its creation there
    failed, or `policy.create_in_app` is off).

    It reads every contact with tracking, a page at a time: the cost of one pass over
    ``p_tracking``, for an audit and not for each cycle (which counts what it holds)."""
    conn = log.connection
    held: list[HeldTracking] = []
    after = ""
    while rows := list(await conn.execute_fetchall(_TRACKED, (after, _HELD_CHUNK))):
        after = str(rows[-1][0])
        live = await app_partners(conn, {str(r[0]): str(r[1]) for r in rows})
        waiting = [r for r in rows if str(r[0]) not in live]
        ids = [str(r[0]) for r in waiting]
        linked = await app_links(conn, ids)
        states = await load_contacts(conn, "ctct", ids)
        for cid, email, count, first, last in waiting:
            if (app_id := linked.get(cid)) is not None:
                reason = f"its app contact {app_id} was deleted"
            elif cid in states and states[cid].deleted:
                reason = "deleted in Constant Contact before ccsync created it in the app"
            else:
                reason = "no app contact holds its address"
            held.append(
                HeldTracking(
                    contact_id=str(cid),
                    email=str(email),
                    activities=int(count),
                    first_at=str(first),
                    last_at=str(last),
                    reason=reason,
                )
            )
    return held
