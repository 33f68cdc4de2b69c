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

from engine._scan import clear_seen, record_seen, scan_deletions
from engine.diff import diff_contact, diff_list
from engine.events import (
    CheckpointAdvanced,
    PageObserved,
    RecordRejected,
    TrackingRecorded,
    content_id,
)
from engine.log import EventLog, NewEvent
from engine.model import ContactRecord, Store
from engine.ports import ContactSource, ListSource, Rejected, TrackingSource
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


class ObserveStats(msgspec.Struct):
    pages: int = 0
    items: int = 0
    events: int = 0
    rejected: int = 0
    interrupted: bool = False  # a stop was requested: observation ended after a whole page


def checkpoint_name(store: Store, what: str) -> str:
    return f"observe.{store}.{what}"


def _bookkeeping(
    store: Store,
    run_id: str,
    page_no: str,
    request: str,
    count: int,
    content_hash: str,
    cp_name: str,
    resume: str,
) -> list[NewEvent]:
    page = PageObserved(
        store=store,
        key=run_id,
        run_id=run_id,
        request=request,
        item_count=count,
        content_hash=content_hash,
    )
    cp = CheckpointAdvanced(store=store, key=cp_name, run_id=run_id, value=resume)
    return [
        NewEvent(content_id(page, page_no), page),
        NewEvent(content_id(cp, page_no), cp),
    ]


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
) -> ObserveStats:
    """Observe every page of changed contacts up to ``bound``; returns what was seen."""
    store = source.store
    cp_name = checkpoint_name(store, "contacts")
    stats = ObserveStats()
    resume = await log.checkpoint(cp_name)
    scanned = False  # did the last page belong to a full scan?
    async for page in source.observe_contacts(resume, bound):
        scanned = page.full_scan
        if scanned:
            await record_seen(log, store, [r.store_id for r in page.contacts])
        records = _latest(page.contacts)
        states = await load_contacts(log.connection, store, (r.store_id for r in records))
        events = _bookkeeping(
            store,
            run_id,
            f"contacts:{stats.pages}",
            page.request,
            len(page.contacts),
            page.content_hash,
            cp_name,
            page.resume,
        )
        events += _rejections(store, page.rejected)
        for rec in records:
            st = states.get(rec.store_id)
            events += diff_contact(
                store, st.record() if st else None, st.position if st else 0, rec
            )
        result = await log.append(events, checkpoints={cp_name: page.resume})
        await projector.catch_up(result.new)
        stats.pages += 1
        stats.items += len(page.contacts)
        stats.rejected += len(page.rejected)
        stats.events += len(result.new) - 2
        _log.info(
            "sync.page_observed",
            store=store,
            request=page.request,
            items=len(page.contacts),
            new_events=len(result.new),
            rejected=len(page.rejected),
        )
        if progress is not None:
            progress.update(f"{store} contacts", len(page.contacts))
        if stop is not None and stop.is_set():
            stats.interrupted = True  # the page in hand is committed; the rest waits
            break
    if scanned and not stats.interrupted:
        gone = await scan_deletions(log, store)
        if gone:
            result = await log.append(gone)
            await projector.catch_up(result.new)
            stats.events += len(result.new)
            _log.info("sync.deletions_found_by_scan", store=store, contacts=len(gone))
        await clear_seen(log, store)
    return stats


async def observe_lists(
    log: EventLog, projector: Projector, store: Store, source: ListSource, run_id: str
) -> ObserveStats:
    """Read every list of a store (there is no date filter) and record what differs."""
    request, lists = await source.observe_lists()
    rows = await log.connection.execute_fetchall(
        "SELECT store_id, position, state FROM p_lists WHERE store = ?", (store,)
    )
    known = {sid: (pos, decode_list(blob)) for sid, pos, blob in rows}
    body = msgspec.json.encode(sorted(lists, key=lambda x: x.store_id))
    events = _bookkeeping(
        store,
        run_id,
        "lists",
        request,
        len(lists),
        hashlib.sha256(body).hexdigest(),
        checkpoint_name(store, "lists"),
        "",
    )
    events = events[:1]  # lists have no checkpoint: they are read in full each cycle
    for lst in lists:
        pos, old = known.get(lst.store_id, (0, None))
        events += diff_list(store, old, pos, lst)
    result = await log.append(events)
    await projector.catch_up(result.new)
    return ObserveStats(pages=1, items=len(lists), events=len(result.new) - 1)


async def observe_tracking(
    log: EventLog,
    projector: Projector,
    source: TrackingSource,
    run_id: str,
    bound: datetime,
    stop: asyncio.Event | None = None,
) -> ObserveStats:
    """Record new tracking activity (sends, opens, clicks, bounces, forwards, opt-outs)."""
    store: Store = "ctct"
    cp_name = checkpoint_name(store, "tracking")
    stats = ObserveStats()
    resume = await log.checkpoint(cp_name)
    async for page in source.observe_tracking(resume, bound):
        events = _bookkeeping(
            store,
            run_id,
            f"tracking:{stats.pages}",
            page.request,
            len(page.activities),
            page.content_hash,
            cp_name,
            page.resume,
        )
        events += _rejections(store, page.rejected)
        for a in page.activities:
            ev = TrackingRecorded(
                store=store, key=a.contact_id, source_time=a.created_time, activity=a
            )
            events.append(NewEvent(content_id(ev), ev))
        result = await log.append(events, checkpoints={cp_name: page.resume})
        await projector.catch_up(result.new)
        stats.pages += 1
        stats.items += len(page.activities)
        stats.events += len(result.new) - 2
        if stop is not None and stop.is_set():
            stats.interrupted = True
            break
    return stats
