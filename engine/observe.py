"""Observe one store: turn each page it returns into events, appended with its checkpoint.

Per page: the projected state of the page's contacts is loaded, each record is diffed against
it (engine.diff), the page itself is recorded (``page.observed``: request, count, content hash)
with the checkpoint it reaches, and the batch is appended in one transaction. Projections catch
up before the next page, so a contact seen twice is diffed against what was just recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec
import structlog

from engine._aio import InFlight, prefetch
from engine._pending import Pending
from engine._scan import clear_seen, record_seen, scan_deletions
from engine.diff import diff_contact, diff_list
from engine.errors import CcsyncError
from engine.events import (
    CheckpointAdvanced,
    PageObserved,
    RecordRejected,
    TrackingRecorded,
    content_id,
)
from engine.log import EventLog, NewEvent
from engine.model import ContactRecord, Store
from engine.ports import ContactSource, ListSource, Page, Rejected, TrackingSource
from engine.progress import Progress
from projections.projector import Projector
from projections.runner import decode_list, load_contacts

__all__ = [
    "ObserveStats",
    "checkpoint_name",
    "observe_contacts",
    "observe_lists",
    "observe_tracking",
]

_log: Final = structlog.get_logger("ccsync.observe")
OBSERVE_BATCH: Final = 5_000  # contacts appended per transaction
# Pages fetched ahead of the one being appended: enough for a whole batch of Constant
# Contact's 500-contact pages, so the store keeps answering while a batch is committed
# (with 2, fetching stalled behind every commit and the two took turns).
PREFETCH_PAGES: Final = 12


class ObserveStats(msgspec.Struct):
    pages: int = 0
    items: int = 0
    events: int = 0
    rejected: int = 0
    interrupted: bool = False  # a stop was requested: observation ended after a whole page
    # The store failed (its quota spent, its login refused, its server or database out of reach
    # after the retries) after the pages counted here, which are committed; returned, not
    # raised, when the caller asked for it.
    store_failed: CcsyncError | None = None


def _returned(error: Exception, wanted: bool) -> CcsyncError:
    """A store's error, to return in ``ObserveStats.store_failed`` when the caller asked for
    that (``return_store_error``) and it is one of ours; else it is raised."""
    if wanted and isinstance(error, CcsyncError):
        return error
    raise error


def checkpoint_name(store: Store, what: str) -> str:
    return f"observe.{store}.{what}"


def _page_event(
    store: Store, run_id: str, page_no: str, request: str, count: int, content_hash: str
) -> NewEvent:
    page = PageObserved(
        store=store,
        key=run_id,
        run_id=run_id,
        request=request,
        item_count=count,
        content_hash=content_hash,
    )
    return NewEvent(content_id(page, page_no), page)


def _checkpoint_event(
    store: Store, run_id: str, page_no: str, cp_name: str, resume: str
) -> NewEvent:
    cp = CheckpointAdvanced(store=store, key=cp_name, run_id=run_id, value=resume)
    return NewEvent(content_id(cp, page_no), cp)


def _rejections(store: Store, rejected: Sequence[Rejected]) -> list[NewEvent]:
    out = []
    for r in rejected:
        ev = RecordRejected(store=store, key=r.record, field=r.field, problem=r.problem, raw=r.raw)
        out.append(NewEvent(content_id(ev), ev))
        _log.warning(
            "observe.record_rejected",
            store=store,
            record=r.record,
            field=r.field,
            problem=r.problem,
        )
    return out


def _latest(records: Sequence[ContactRecord]) -> list[ContactRecord]:
    """One record per id: items repeated within a page (or across the overlap) count once."""
    by_id: dict[str, ContactRecord] = {}
    for rec in records:
        prev = by_id.get(rec.store_id)
        if prev is None or _newer(rec, prev):
            by_id[rec.store_id] = rec
    return list(by_id.values())


def _newer(a: ContactRecord, b: ContactRecord) -> bool:
    if a.updated_at is None or b.updated_at is None:
        return True
    return a.updated_at >= b.updated_at


async def observe_contacts(
    log: EventLog,
    projector: Projector,
    source: ContactSource,
    run_id: str,
    bound: datetime,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    *,
    return_store_error: bool = False,
) -> ObserveStats:
    """Observe every page of changed contacts up to ``bound``; returns what was seen. With
    ``return_store_error``, an error of the store (a CcsyncError from its listing, not the
    log's) is returned in ``store_failed`` once the pages before it are committed, instead of
    raised.

    Pages are appended ``OBSERVE_BATCH`` contacts at a time, each batch in one transaction with
    the checkpoint of its last page: a commit rewrites every index page the batch touched, so
    fewer, larger commits are what keeps a large initial fetch fast. One batch is appended
    while the next is fetched and diffed, in order. A crash loses the pages held in memory
    (they are fetched again from the committed checkpoint); an error from the store first
    commits what was fetched before it.
    """
    store = source.store
    cp_name = checkpoint_name(store, "contacts")
    stats = ObserveStats()
    held: list[Page] = []
    resume = await log.checkpoint(cp_name)
    scanned = False  # did the last page belong to a full scan?
    appending = _Appending(log, store, cp_name, stats)
    store_error: Exception | None = None
    # The store's next pages are fetched and normalised while a batch is being appended.
    pages = prefetch(source.observe_contacts(resume, bound), PREFETCH_PAGES)
    try:
        while True:
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                break
            except Exception as exc:  # the store failed (e.g. its quota ran out)
                store_error = exc
                break
            held.append(page)
            scanned = page.full_scan
            if progress is not None:
                progress.update(f"{store} contacts", len(page.contacts))
            if stop is not None and stop.is_set():
                stats.interrupted = True  # the pages in hand are committed; the rest waits
                break
            if sum(len(p.contacts) for p in held) >= OBSERVE_BATCH:
                batch, held = held, []  # (an append that fails is not tried again)
                await appending.submit(run_id, batch)
        await pages.aclose()  # a stop leaves early: no page is fetched after it
        if held:  # (after a store error too: what was fetched before it is kept)
            await appending.submit(run_id, held)
        await appending.landed()
    except BaseException:
        await appending.abandon()
        await pages.aclose()
        raise
    if store_error is not None:
        # (A partial listing proves no deletion: the scan's end is not run.)
        stats.store_failed = _returned(store_error, return_store_error)
        return stats
    if scanned and not stats.interrupted:
        gone = await scan_deletions(log, store)
        if gone:
            result = await log.append(gone)
            await projector.catch_up()
            stats.events += len(result.new)
            _log.info("sync.deletions_found_by_scan", store=store, contacts=len(gone))
        await clear_seen(log, store)
    return stats


class _Prepared(msgspec.Struct):
    events: list[NewEvent]
    bookkeeping: set[str]
    resume: str
    scanning: bool
    start: int
    unchanged: list[str]


class _Appending:
    """One batch appended in a task of its own while the next is diffed (which reads the
    projection between the append's statements: its contacts are disjoint from the batch in
    flight, or it waits for that batch first). Batches are appended in order."""

    def __init__(self, log: EventLog, store: Store, cp_name: str, stats: ObserveStats) -> None:
        self.log = log
        self.store: Store = store
        self.cp_name = cp_name
        self.stats = stats
        self._inflight = InFlight()
        self._ids: set[str] = set()
        self.landed = self._inflight.landed
        self.abandon = self._inflight.abandon  # (the log rolls the batch back)

    async def submit(self, run_id: str, pages: list[Page]) -> None:
        ids = {r.store_id for p in pages for r in p.contacts}
        if not self._ids.isdisjoint(ids):
            await self.landed()  # a contact in both batches is diffed against the first's result
        prepared = await _prepare(self.log, self.store, self.cp_name, run_id, pages, self.stats)
        await self.landed()
        self._ids = ids
        self._inflight.start(self._append(prepared))

    async def _append(self, p: _Prepared) -> None:
        async def note_seen(conn: Pending) -> None:
            if p.scanning:  # even an empty listing: its start is what its end compares with
                await record_seen(conn, self.store, p.start, p.unchanged)

        result = await self.log.append(
            p.events, checkpoints={self.cp_name: p.resume}, within=note_seen
        )
        self.stats.events += sum(1 for i in result.new_ids if i not in p.bookkeeping)


async def _prepare(
    log: EventLog, store: Store, cp_name: str, run_id: str, pages: list[Page], stats: ObserveStats
) -> _Prepared:
    """Diff the pages' records against the projection: the events to append with the
    checkpoint of the last page, and what a full scan must note (engine._scan)."""
    records = _latest([r for p in pages for r in p.contacts])
    # From what is committed: the batch in flight holds none of these contacts (or its append
    # was waited for), and this read need not wait behind its commit.
    states = await load_contacts(await log.committed(), store, (r.store_id for r in records))
    events: list[NewEvent] = []
    for page in pages:
        page_no = f"contacts:{stats.pages}"
        events.append(
            _page_event(store, run_id, page_no, page.request, len(page.contacts), page.content_hash)
        )
        stats.pages += 1
        stats.items += len(page.contacts)
        stats.rejected += len(page.rejected)
        _log.info(
            "sync.page_observed",
            store=store,
            request=page.request,
            items=len(page.contacts),
            rejected=len(page.rejected),
        )
    resume = pages[-1].resume
    events.append(_checkpoint_event(store, run_id, f"contacts:{stats.pages - 1}", cp_name, resume))
    bookkeeping = {e.id for e in events}
    for page in pages:
        events += _rejections(store, page.rejected)
    scanning = any(p.full_scan for p in pages)
    unchanged: list[str] = []  # what a full scan listed that needs noting (see engine._scan)
    for rec in records:
        st = states.get(rec.store_id)
        diff = diff_contact(store, st.record() if st else None, st.position if st else 0, rec)
        if diff:
            events += diff
        elif scanning:
            unchanged.append(rec.store_id)
    # (With a batch still in flight this is before it: an earlier start only spares that
    # batch's contacts, which this observation listed, from the scan's deletions.)
    start = (await log.head()).position if scanning else 0
    return _Prepared(events, bookkeeping, resume, scanning, start, unchanged)


async def observe_lists(
    log: EventLog,
    projector: Projector,
    store: Store,
    source: ListSource,
    run_id: str,
    *,
    return_store_error: bool = False,
) -> ObserveStats:
    """Read every list of a store (there is no date filter) and record what differs. With
    ``return_store_error``, as ``observe_contacts``: an error of the store is returned in
    ``store_failed``, not raised."""
    try:
        request, lists = await source.observe_lists()
    except CcsyncError as exc:  # the store's, not the log's
        return ObserveStats(store_failed=_returned(exc, return_store_error))
    rows = await log.connection.execute_fetchall(
        "SELECT store_id, position, state FROM p_lists WHERE store = ?", (store,)
    )
    known = {sid: (pos, decode_list(blob)) for sid, pos, blob in rows}
    body = msgspec.json.encode(sorted(lists, key=lambda x: x.store_id))
    # Lists have no checkpoint: they are read in full each cycle.
    events = [
        _page_event(store, run_id, "lists", request, len(lists), hashlib.sha256(body).hexdigest())
    ]
    for lst in lists:
        pos, old = known.get(lst.store_id, (0, None))
        events += diff_list(store, old, pos, lst)
    result = await log.append(events)
    await projector.catch_up()
    return ObserveStats(pages=1, items=len(lists), events=len(result.new) - 1)


async def observe_tracking(
    log: EventLog,
    projector: Projector,
    source: TrackingSource,
    run_id: str,
    bound: datetime,
    stop: asyncio.Event | None = None,
    *,
    return_store_error: bool = False,
) -> ObserveStats:
    """Record new tracking activity (sends, opens, clicks, bounces, forwards, opt-outs). With
    ``return_store_error``, as ``observe_contacts``: an error of the store is returned in
    ``store_failed`` (the pages before it committed), not raised."""
    store: Store = "ctct"
    cp_name = checkpoint_name(store, "tracking")
    stats = ObserveStats()
    resume = await log.checkpoint(cp_name)
    pages = aiter(source.observe_tracking(resume, bound))
    while True:
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            break
        except CcsyncError as exc:  # the store's, not the log's
            stats.store_failed = _returned(exc, return_store_error)
            break
        page_no = f"tracking:{stats.pages}"
        events = [
            _page_event(
                store, run_id, page_no, page.request, len(page.activities), page.content_hash
            )
        ]
        # A token that did not move is not recorded again (it holds a mark per report).
        moved = page.resume != resume
        if moved:
            events.append(_checkpoint_event(store, run_id, page_no, cp_name, page.resume))
            resume = page.resume
        events += _rejections(store, page.rejected)
        for a in page.activities:
            ev = TrackingRecorded(
                store=store, key=a.contact_id, source_time=a.created_time, activity=a
            )
            events.append(NewEvent(content_id(ev), ev))
        result = await log.append(events, checkpoints={cp_name: page.resume} if moved else {})
        await projector.catch_up()
        stats.pages += 1
        stats.items += len(page.activities)
        stats.events += len(result.new) - 1 - moved
        if stop is not None and stop.is_set():
            stats.interrupted = True
            break
    return stats
