"""One sync cycle: observe both stores, project, reconcile, issue and execute commands, record.

GET, COMPARE, UPDATE — with every step in the log. The cycle's upper time bound is fixed when it
starts; no checkpoint moves past it. Both stores are observed concurrently; each page is appended
(and projected) in its own transaction, so a crash loses at most the page in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final, Protocol
from uuid import uuid4

import msgspec
import structlog

from engine._aio import InFlight, gather_or_cancel
from engine._gc import collector_relaxed
from engine.commands import Command, RecordTracking, command_id
from engine.errors import CcsyncError, ConfigError
from engine.events import SyncRunFinished, SyncRunStarted, content_id
from engine.log import EventLog, NewEvent
from engine.model import Store, TrackingActivity
from engine.observe import ObserveStats, observe_contacts, observe_lists, observe_tracking
from engine.outbox import Delivered, Issued, Outbox, OutboxStats, Unsettled, not_sent
from engine.pairs import app_partners, pairs_for_emails, touched_pairs
from engine.policy import ListLink, Policy
from engine.ports import CommandSink, ContactSource, ListSource, TrackingSource, utc_now
from engine.progress import Progress
from engine.reconcile import Decisions, Pair, reconcile
from projections.projector import Projector
from projections.runner import decode_list

__all__ = ["CycleSummary", "SyncEngine", "SyncStore"]

_log: Final = structlog.get_logger("ccsync.cycle")
RECONCILER: Final = "reconciler"
TRACKING_FORWARDED: Final = "tracking.forwarded"
FLUSH_AT: Final = 10_000
# Tracking recorded after a position. ``+t.store``: through the position index, the new rows
# only (the planner otherwise read every tracking row of the store, each cycle, and sorted them).
NEW_TRACKING_SQL: Final = (
    "SELECT t.activity, t.contact_id, t.email FROM p_tracking t "
    "WHERE +t.store = 'ctct' AND t.position > ? ORDER BY t.position"
)
# The tracking recorded up to a position of the contacts paired after it: what was held then
# for want of a live app contact. CROSS JOIN: the pairs made since, through their position
# index, first (the planner otherwise read every tracking row of the store).
HELD_TRACKING_SQL: Final = (
    "SELECT t.activity, t.contact_id, t.email FROM p_links l "
    "CROSS JOIN p_tracking t ON t.store = 'ctct' AND t.contact_id = l.ctct_id "
    "WHERE l.position > ? AND +t.position <= ? ORDER BY t.position"
)


class SyncStore(ContactSource, ListSource, CommandSink, Protocol):
    """What a store offers the cycle: observation of contacts and lists, and a command sink."""


class CycleSummary(msgspec.Struct, kw_only=True):
    run_id: str
    outcome: str = "ok"
    observed: dict[str, int] = msgspec.field(default_factory=dict)
    events: dict[str, int] = msgspec.field(default_factory=dict)
    commands: dict[str, int] = msgspec.field(default_factory=dict)
    applied: int = 0
    failed: int = 0
    blocked: int = 0
    withheld: int = 0  # commands decided for a store that was down: not issued, decided again
    # contacts whose new tracking has no live app contact to go to: kept in the log, held
    tracking_held: int = 0
    rejected: int = 0
    api_requests: int = 0
    durations: dict[str, float] = msgspec.field(default_factory=dict)
    error: str | None = None


class SyncEngine:
    """Runs sync cycles between a Constant Contact store and an app store over one log."""

    def __init__(
        self,
        log: EventLog,
        ctct: SyncStore,
        app: SyncStore,
        policy: Policy,
        *,
        tracking: TrackingSource | None = None,
        clock: Callable[[], datetime] | None = None,
        requests_made: Callable[[], int] | None = None,
        progress: Progress | None = None,
        ctct_import_list: str | None = None,
    ) -> None:
        self.log = log
        # The list Constant Contact's imports join a new contact to when no mapped list applies
        # (ctct.import_list_id): checked against the mapping once the lists are observed.
        self.ctct_import_list = ctct_import_list
        self.stores: dict[Store, SyncStore] = {"ctct": ctct, "app": app}
        self.policy = policy
        self.tracking = tracking
        self.clock = clock or utc_now
        self.projector = Projector(log)
        self.outbox = Outbox(log, self.projector, {"ctct": ctct, "app": app})
        self._requests_made = requests_made or (lambda: 0)
        self.progress = progress
        self._started = False
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Finish the page in hand, then end the cycle without reconciling (SIGTERM)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def start(self) -> None:
        """Catch projections up with the log (after a crash they may be a batch behind)."""
        await self.projector.start()
        self._started = True

    async def cycle(self, *, full_compare: bool = False) -> CycleSummary:
        with collector_relaxed():
            return await self._cycle(full_compare)

    async def _cycle(self, full_compare: bool) -> CycleSummary:
        if not self._started:
            await self.start()
        run_id = uuid4().hex
        bound = self.clock()
        summary = CycleSummary(run_id=run_id)
        requests_before = self._requests_made()
        started = SyncRunStarted(
            store="engine",
            key=run_id,
            bound=bound,
            mode="full-compare" if full_compare else "incremental",
        )
        await self.log.append([NewEvent(content_id(started), started)])
        await self.projector.catch_up()
        try:
            t1 = time.perf_counter()
            # A store that fails while its changes are listed (its daily quota spent, its login
            # refused, its server or database out of reach after the retries), or fails fatally
            # while written, is written no more this cycle; the other store still gets its
            # commands (an opt-out seen in one store must not wait for the other to recover),
            # then the cycle fails with the store's error, its checkpoint unmoved: the next
            # decides again.
            down = await self._observe(run_id, bound, summary)
            t2 = time.perf_counter()
            if self.progress is not None:
                self.progress.done()
            if self._stop.is_set():
                # Every observed page is committed with its checkpoint; deciding on a partial
                # observation is safe but pointless: the next cycle goes on from here.
                summary.outcome = "interrupted"
                return summary
            head = (await self.log.head()).position
            t3 = time.perf_counter()
            await self._reconcile_and_execute(full_compare, run_id, bound, summary, down)
            new_tracking, summary.tracking_held = await self._tracking_commands()
            tracking = [*await self.outbox.failed_tracking(bound, run_id), *new_tracking]
            sendable = [c for c in tracking if c.target not in down]
            summary.withheld += len(tracking) - len(sendable)
            if sendable:
                self._count(summary, await self.outbox.execute(sendable, run_id, bound))
            self._raise_if_down(down, summary)
            await self.log.append(
                [], checkpoints={RECONCILER: str(head), TRACKING_FORWARDED: str(head)}
            )
            t4 = time.perf_counter()
            summary.durations = {
                "observe": t2 - t1,
                "reconcile_execute": t4 - t3,
            }
        except Exception as exc:
            summary.outcome, summary.error = "failed", str(exc)
            raise
        finally:
            summary.api_requests = self._requests_made() - requests_before
            if summary.outcome == "ok" and summary.failed:
                summary.outcome = "partial"
            fin = SyncRunFinished(
                store="engine",
                key=run_id,
                outcome=summary.outcome,  # type: ignore[arg-type]
                counts={
                    "applied": summary.applied,
                    "failed": summary.failed,
                    "blocked": summary.blocked,
                    "withheld": summary.withheld,
                    "tracking_held": summary.tracking_held,
                    "rejected": summary.rejected,
                    "api_requests": summary.api_requests,
                    **{f"observed.{k}": v for k, v in summary.observed.items()},
                    **{f"command.{k}": v for k, v in summary.commands.items()},
                },
                error=summary.error,
            )
            await asyncio.shield(self._finish(fin))
            _log.info("sync.cycle_finished", **msgspec.to_builtins(summary))
        return summary

    async def _finish(self, fin: SyncRunFinished) -> None:
        await self.log.append([NewEvent(content_id(fin), fin)])
        await self.projector.catch_up()
        # The cycle's pages go to the database file now, so that a later cycle does not pay
        # for them; the copy runs beside whatever comes next (a daemon's wait for its next
        # cycle) rather than inside this one.
        self.log.copy_wal_soon()

    @staticmethod
    def _raise_if_down(down: Mapping[Store, CcsyncError], summary: CycleSummary) -> None:
        """The first store error of a cycle that went on writing to the other store."""
        if down:
            if summary.withheld:
                _log.warning(
                    "sync.commands_withheld", commands=summary.withheld, stores=sorted(down)
                )
            raise next(iter(down.values()))

    @staticmethod
    def _count(summary: CycleSummary, stats: OutboxStats) -> None:
        for k, v in stats.issued.items():
            summary.commands[k] = summary.commands.get(k, 0) + v
        summary.applied += stats.applied
        summary.failed += stats.failed

    async def _observe(
        self, run_id: str, bound: datetime, summary: CycleSummary
    ) -> dict[Store, CcsyncError]:
        """Observe both stores; returns those whose listing failed with an error of their own
        (the pages before the failure committed, the other store observed to the end)."""
        down: dict[Store, CcsyncError] = {}

        async def one(store: Store) -> None:
            src = self.stores[store]
            lists = await observe_lists(
                self.log, self.projector, store, src, run_id, return_store_error=True
            )
            if lists.store_failed is not None:  # (its contacts are not asked for)
                self._add(summary, f"{store}.lists", lists)
                self._note_down(down, store, lists)
                return
            if self._stop.is_set():
                return
            contacts = await observe_contacts(
                self.log,
                self.projector,
                src,
                run_id,
                bound,
                self._stop,
                self.progress,
                return_store_error=True,
            )
            self._add(summary, f"{store}.lists", lists)
            self._add(summary, f"{store}.contacts", contacts)
            self._note_down(down, store, contacts)

        # Both stores at once; if one fails the other is cancelled (its committed pages stay
        # committed with their checkpoints), so nothing is appended after the run has failed.
        # (A store's own error is not a failure here: it is returned, as ``down``. What is, is
        # an error of the log, or one that is no CcsyncError: a bug.)
        await gather_or_cancel(one("ctct"), one("app"))
        if self.tracking is not None and not self._stop.is_set() and "ctct" not in down:
            tr = await observe_tracking(
                self.log,
                self.projector,
                self.tracking,
                run_id,
                bound,
                self._stop,
                return_store_error=True,
            )
            self._add(summary, "ctct.tracking", tr)
            self._note_down(down, "ctct", tr)
        return down

    @staticmethod
    def _note_down(down: dict[Store, CcsyncError], store: Store, stats: ObserveStats) -> None:
        if stats.store_failed is not None:
            exc = stats.store_failed
            _log.warning("sync.store_down", store=store, error=str(exc), phase="observe")
            down[store] = exc

    @staticmethod
    def _add(summary: CycleSummary, name: str, stats: ObserveStats) -> None:
        summary.observed[name] = stats.items
        summary.events[name] = stats.events
        summary.rejected += stats.rejected

    async def resolved_policy(self) -> Policy:
        """The policy with list links given by name resolved to each store's list ids.

        Raises ConfigError if the import list is one of the mapped lists: every contact
        created in Constant Contact without a mapped list would join it, and the next cycle
        would take it off again (the app is the list's source of record) or put it on the app's
        list too (Constant Contact is), neither of which anyone asked for."""
        conn = self.log.connection
        rows = await conn.execute_fetchall("SELECT store, store_id, state FROM p_lists")
        names: dict[tuple[str, str], str] = {}
        for store, sid, blob in rows:
            lst = decode_list(blob)
            names[(store, lst.name)] = sid
        links = tuple(
            ListLink(
                ctct=names.get(("ctct", link.ctct), link.ctct),
                app=names.get(("app", link.app), link.app),
                source=link.source,
            )
            for link in self.policy.lists
        )
        for given, link in zip(self.policy.lists, links, strict=True):
            if link.ctct == self.ctct_import_list:  # (never, without an import list)
                then = (
                    "be taken off it again by the next cycle"
                    if link.source == "app"
                    else f"be added to the app's list {given.app!r} too"
                )
                raise ConfigError(
                    "ctct.import_list_id",
                    f"{self.ctct_import_list} is the Constant Contact list {given.ctct!r}, "
                    f"which [[lists]] maps to the app's {given.app!r}: every contact ccsync "
                    f"creates there with no mapped list would join it and {then}. Give imports "
                    "a list of their own that no [[lists]] entry names",
                )
        return msgspec.structs.replace(self.policy, lists=links)

    async def _reconcile_and_execute(
        self,
        full_compare: bool,
        run_id: str,
        bound: datetime,
        summary: CycleSummary,
        down: dict[Store, CcsyncError],
    ) -> None:
        """Decide for every touched pair, and for the contacts of unsettled commands, chunk by
        chunk; execute whenever FLUSH_AT commands, links and blocked decisions wait (bounded
        memory however much changed).

        Unsettled commands (applied last cycle, failed, or issued before a crash) are settled
        with the chunk that holds their contacts: decided again -> sent again (after backoff),
        not decided again -> confirmed, or superseded (failed, or asked again by a new command
        on the contact's newer state: the store did not show it).

        A store in ``down`` (its listing failed) gets none of the commands: they are
        left out (undecided: the cycle will fail, its checkpoint unmoved). When a batch fails
        fatally in a store, that store joins ``down``, and the batch issued meanwhile fails
        there unsent. The other store's commands go on being sent.
        """
        since_text = await self.log.checkpoint(RECONCILER)
        since = None if full_compare else int(since_text or 0)
        policy = await self.resolved_policy()
        conn = self.log.connection
        pending = Decisions()  # its links and blocked decisions; the commands, by id:
        commands: dict[str, Command] = {}
        to_settle: dict[str, Unsettled] = {}  # commands not decided again, by id
        replaced: dict[str, str] = {}  # of those, the ones asked again by a new command: its id
        # One batch is sent while the next is decided and issued, and while the outcomes of
        # the one before are recorded (the stores' writes overlap the reconciler's reads and
        # decisions and the log's records); batches are issued, sent and recorded in order,
        # one sent at a time.
        inflight = InFlight()
        inflight_ids: set[str] = set()
        # Commands left out because their store was down (a pair reached twice is decided
        # twice: a command counts once, and not if it was issued earlier in the cycle).
        withheld: set[str] = set()
        started = (await self.log.head()).position
        unrecorded: Delivered | None = None  # the batch that landed, its outcomes not recorded

        async def landed() -> Delivered | None:
            """Wait for the batch being sent; its outcomes, to record."""
            nonlocal unrecorded
            try:
                await inflight.landed()
            finally:
                inflight_ids.clear()
            done, unrecorded = unrecorded, None
            if done is not None and done.fatal:
                for store, exc in done.fatal.items():
                    _log.warning("sync.store_down", store=store, error=str(exc), phase="write")
                down.update(done.fatal)
            return done

        async def record(done: Delivered | None) -> None:
            if done is not None:
                self._count(summary, await self.outbox.record(done, raise_fatal=False))

        async def settle() -> None:
            """The batch in flight sent and its outcomes recorded."""
            await record(await landed())

        async def send(issued: Issued) -> None:
            nonlocal unrecorded
            unrecorded = await self.outbox.deliver(issued, down)

        async def flush() -> None:
            # A pair can be reached twice (touched, and through an unsettled command).
            links = {content_id(e): e for e in pending.links}
            blocked = {content_id(e): e for e in pending.blocked}
            extra = [NewEvent(i, e) for i, e in (*links.items(), *blocked.items())]
            extra += self.outbox.settled(to_settle.values(), run_id, replaced)
            batch = {cid: c for cid, c in commands.items() if c.target not in down}
            if down:
                withheld.update(cid for cid, c in commands.items() if c.target in down)
            commands.clear()
            pending.links.clear()
            pending.blocked.clear()
            to_settle.clear()
            replaced.clear()
            # Issued while the batch before is being sent (its ids are left to it), sent after.
            issued = await self.outbox.issue(
                list(batch.values()), run_id, bound, extra=extra, ids=list(batch),
                in_flight=inflight_ids,
            )  # fmt: skip
            summary.blocked += len(issued.stats.new_extra & blocked.keys())
            try:
                done = await landed()
            except Exception as exc:
                await self.outbox.abandon(issued, not_sent(exc))
                self._count(summary, issued.stats)
                raise
            inflight_ids.update(cid for cid, _ in issued.todo)
            inflight.start(send(issued))
            await record(done)  # while this batch is sent

        async def decide(pairs: list[Pair], unsettled: list[Unsettled] | None = None) -> None:
            d = reconcile(pairs, policy)
            if unsettled is None:
                emails = {s.email for p in pairs for s in (p.ctct, p.app) if s is not None}
                unsettled = await self.outbox.unsettled(bound, emails | {p.email for p in pairs})
            ids = [command_id(c) for c in d.commands]
            decided = set(ids)
            # Settled with the next issue records, not in a transaction of their own per chunk
            # (a second cycle confirms every command of the first). The batch in flight is this
            # cycle's own: not a leftover to settle.
            left = [
                u
                for u in unsettled
                if u.command_id not in decided and u.command_id not in inflight_ids
            ]
            to_settle.update((u.command_id, u) for u in left)
            replaced.update(await self.outbox.replaced(left, zip(ids, d.commands, strict=True)))
            commands.update(zip(ids, d.commands, strict=True))
            pending.links.extend(d.links)
            pending.blocked.extend(d.blocked)
            # Links, blocked decisions and settled commands count too: a second cycle pairs
            # every contact the first one created and issues almost no commands.
            waiting = len(commands) + len(pending.links) + len(pending.blocked) + len(to_settle)
            if waiting >= FLUSH_AT:
                await flush()

        try:
            async for pairs in touched_pairs(conn, since):
                await decide(pairs)
            # Unsettled commands for contacts nobody touched (a write the store did not show);
            # what the touched contacts settled is recorded first, so the sweep does not meet it.
            await flush()
            after: int | None = 0
            while after is not None:
                await settle()  # the orphan sweep must not meet this cycle's batch half-done
                orphans, after = await self.outbox.orphans(bound, since or -1, after)
                pairs = await pairs_for_emails(conn, sorted({u.email for u in orphans}))
                await decide(pairs, orphans)
            await flush()
            await settle()
            if withheld:
                issued = await self.outbox.issued_since(withheld, started)
                summary.withheld += len(withheld - issued)
        except BaseException:
            # The batch in flight ends (its writes were sent) and its outcomes are recorded
            # before the cycle ends; the first error is the one raised.
            with contextlib.suppress(Exception):
                await settle()
            raise

    async def _tracking_commands(self) -> tuple[list[Command], int]:
        """New tracking activity, grouped per contact, for the app's activities table.

        Only contacts with a live app contact get theirs: one deleted in the app (deletions
        need not reach Constant Contact, which goes on mailing her), or never created there
        (deleted in Constant Contact first), has nowhere to record it, and a record sent
        there would fail at every cycle. It is held (the log has it) and goes out with the
        cycle that pairs the contact with a live app contact, if one ever does. Returns the
        commands, and how many contacts' activity is held."""
        since = int(await self.log.checkpoint(TRACKING_FORWARDED) or 0)
        conn = self.log.connection
        rows = [
            *await conn.execute_fetchall(NEW_TRACKING_SQL, (since,)),
            *await conn.execute_fetchall(HELD_TRACKING_SQL, (since, since)),
        ]
        if not rows:
            return [], 0
        partners = await app_partners(conn, {cid: email for _, cid, email in rows})
        dec = msgspec.json.Decoder(TrackingActivity)
        grouped: dict[tuple[str, str], list[TrackingActivity]] = {}
        held: set[str] = set()
        for blob, cid, email in rows:
            partner = partners.get(cid)
            if partner is None:
                held.add(cid)
                continue
            grouped.setdefault((email, partner), []).append(dec.decode(blob))
        out: list[Command] = []
        for (email, app_id), acts in grouped.items():
            out.append(
                RecordTracking(target="app", email=email, store_id=app_id, activities=tuple(acts))
            )
        return sorted(out, key=command_id), len(held)
