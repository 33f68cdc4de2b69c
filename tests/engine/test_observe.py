"""Observation of one store: pages appended in batches with their checkpoint, full scans that
find deletions, and a store failing mid-fetch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

import engine.observe as observe
from engine.events import (
    CheckpointAdvanced,
    ContactChanged,
    ContactDeleted,
    ContactObserved,
    PageObserved,
)
from engine.log import EventLog
from engine.model import ContactRecord
from engine.observe import checkpoint_name, observe_contacts
from engine.ports import Page
from projections.projector import Projector
from projections.runner import load_contacts

pytestmark = pytest.mark.asyncio
BOUND = datetime(2026, 6, 1, tzinfo=UTC)


class Listing:
    """A store that answers with fixed pages, each resuming at its number, then maybe fails."""

    def __init__(
        self,
        pages: Sequence[Sequence[str]],
        *,
        full_scan: bool,
        fail_after: int = -1,
        emails: dict[str, str] | None = None,
    ):
        self.pages = pages
        self.emails = emails or {}
        self.full_scan = full_scan
        self.fail_after = fail_after
        self.asked_from: list[str | None] = []

    @property
    def store(self) -> str:
        return "app"

    async def observe_contacts(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        self.asked_from.append(resume)
        start = int(resume or 0)
        for n, ids in enumerate(self.pages[start:], start=start + 1):
            if n - 1 == self.fail_after:
                raise RuntimeError("the store went away")
            yield Page(
                request=f"GET page {n}",
                contacts=tuple(
                    ContactRecord(store_id=i, email=self.emails.get(i, f"{i}@example.org"))
                    for i in ids
                ),
                content_hash=f"{n:064x}",
                resume=str(n),
                full_scan=self.full_scan,
            )


@pytest_asyncio.fixture
async def log(tmp_path: Path) -> AsyncIterator[tuple[EventLog, Projector]]:
    lg = await EventLog.open(tmp_path / "log.db")
    projector = Projector(lg)
    await projector.start()
    yield lg, projector
    await lg.close()


async def events_of(log: EventLog, kind: type) -> list[object]:
    return [r.event async for r in log.read() if isinstance(r.event, kind)]


async def test_pages_are_appended_in_batches_each_with_the_checkpoint_of_its_last_page(
    log: tuple[EventLog, Projector], monkeypatch: pytest.MonkeyPatch
) -> None:
    lg, projector = log
    monkeypatch.setattr(observe, "OBSERVE_BATCH", 4)
    src = Listing([["a", "b"], ["c", "d"], ["e", "f"], ["g"]], full_scan=False)
    stats = await observe_contacts(lg, projector, src, "run-1", BOUND)  # type: ignore[arg-type]
    assert (stats.pages, stats.items, stats.events) == (4, 7, 7)
    # Every page is on record with its request; the checkpoint moved once per batch.
    assert [e.request for e in await events_of(lg, PageObserved)] == [  # type: ignore[attr-defined]
        "GET page 1",
        "GET page 2",
        "GET page 3",
        "GET page 4",
    ]
    assert [e.value for e in await events_of(lg, CheckpointAdvanced)] == ["2", "4"]  # type: ignore[attr-defined]
    assert await lg.checkpoint(checkpoint_name("app", "contacts")) == "4"
    states = await load_contacts(lg.connection, "app", "abcdefg")
    assert sorted(states) == list("abcdefg")


async def test_a_store_failing_mid_fetch_keeps_the_pages_it_returned_and_resumes_after_them(
    log: tuple[EventLog, Projector], monkeypatch: pytest.MonkeyPatch
) -> None:
    lg, projector = log
    monkeypatch.setattr(observe, "OBSERVE_BATCH", 100)  # all pages held in one batch
    failing = Listing([["a"], ["b"], ["c"]], full_scan=False, fail_after=2)
    with pytest.raises(RuntimeError, match="went away"):
        await observe_contacts(lg, projector, failing, "run-1", BOUND)  # type: ignore[arg-type]
    assert len(await events_of(lg, ContactObserved)) == 2
    assert await lg.checkpoint(checkpoint_name("app", "contacts")) == "2"
    healthy = Listing([["a"], ["b"], ["c"]], full_scan=False)
    stats = await observe_contacts(lg, projector, healthy, "run-2", BOUND)  # type: ignore[arg-type]
    assert healthy.asked_from == ["2"]
    assert stats.items == 1
    assert len(await events_of(lg, ContactObserved)) == 3


async def test_a_full_scan_across_batches_finds_exactly_the_contacts_it_did_not_list(
    log: tuple[EventLog, Projector], monkeypatch: pytest.MonkeyPatch
) -> None:
    lg, projector = log
    monkeypatch.setattr(observe, "OBSERVE_BATCH", 2)
    first = Listing([["a", "b"], ["c", "d"], ["e"]], full_scan=True)
    await observe_contacts(lg, projector, first, "run-1", BOUND)  # type: ignore[arg-type]
    assert await events_of(lg, ContactDeleted) == []
    await lg.append([], checkpoints={checkpoint_name("app", "contacts"): "0"})  # scan again
    second = Listing([["a"], ["c", "e"]], full_scan=True)
    stats = await observe_contacts(lg, projector, second, "run-2", BOUND)  # type: ignore[arg-type]
    gone = sorted(e.key for e in await events_of(lg, ContactDeleted))  # type: ignore[attr-defined]
    assert gone == ["b", "d"]
    assert stats.events == 2
    states = await load_contacts(lg.connection, "app", "abcde")
    assert {k for k, s in states.items() if s.deleted} == {"b", "d"}


async def test_a_scan_that_changes_adds_and_resumes_after_a_failure_deletes_only_the_unlisted(
    log: tuple[EventLog, Projector], monkeypatch: pytest.MonkeyPatch
) -> None:
    lg, projector = log
    monkeypatch.setattr(observe, "OBSERVE_BATCH", 2)
    await observe_contacts(
        lg, projector, Listing([["a", "b", "c", "d", "e"]], full_scan=True), "r1", BOUND
    )  # type: ignore[arg-type]
    await lg.append([], checkpoints={checkpoint_name("app", "contacts"): "0"})  # scan again
    # Changed (a), unchanged (c), new (f) and unlisted (b, d, e) contacts; the store fails
    # after the first batch and the scan resumes in a later run from its checkpoint.
    pages = [["a", "c"], ["f"], []]
    moved = {"a": "a.new@example.org"}
    failing = Listing(pages, full_scan=True, fail_after=2, emails=moved)
    with pytest.raises(RuntimeError, match="went away"):
        await observe_contacts(lg, projector, failing, "r2", BOUND)  # type: ignore[arg-type]
    assert await events_of(lg, ContactDeleted) == []  # an unfinished scan deletes nothing
    await observe_contacts(lg, projector, Listing(pages, full_scan=True, emails=moved), "r3", BOUND)  # type: ignore[arg-type]
    gone = sorted(e.key for e in await events_of(lg, ContactDeleted))  # type: ignore[attr-defined]
    assert gone == ["b", "d", "e"]
    # The next complete scan starts afresh: listing everything deletes nothing more.
    await lg.append([], checkpoints={checkpoint_name("app", "contacts"): "0"})
    await observe_contacts(
        lg, projector, Listing([["a", "c", "f"]], full_scan=True, emails=moved), "r4", BOUND
    )  # type: ignore[arg-type]
    assert sorted(e.key for e in await events_of(lg, ContactDeleted)) == ["b", "d", "e"]  # type: ignore[attr-defined]


async def test_an_empty_full_scan_of_an_empty_store_is_a_quiet_success(
    log: tuple[EventLog, Projector],
) -> None:
    lg, projector = log
    stats = await observe_contacts(lg, projector, Listing([[]], full_scan=True), "r", BOUND)  # type: ignore[arg-type]
    assert (stats.pages, stats.items, stats.events) == (1, 0, 0)
    assert await events_of(lg, ContactDeleted) == []


class Versions:
    """A store whose pages list (id, email) pairs: the same contact may come back changed."""

    store = "app"

    def __init__(self, pages: Sequence[Sequence[tuple[str, str]]]) -> None:
        self.pages = pages

    async def observe_contacts(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        for n, items in enumerate(self.pages[int(resume or 0) :], start=int(resume or 0) + 1):
            yield Page(
                request=f"GET page {n}",
                contacts=tuple(ContactRecord(store_id=i, email=e) for i, e in items),
                content_hash=f"{n:064x}",
                resume=str(n),
            )


async def test_the_next_batch_is_diffed_while_one_is_appended(
    log: tuple[EventLog, Projector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch's append completes only once the second batch has been read from the
    projection for diffing: appending and diffing overlap."""
    lg, projector = log
    monkeypatch.setattr(observe, "OBSERVE_BATCH", 2)
    second_diffed = asyncio.Event()
    loads: list[list[str]] = []
    load = observe.load_contacts

    async def spy_load(conn: object, store: str, ids: object) -> object:
        loads.append(sorted(ids))  # type: ignore[call-overload]
        if len(loads) == 2:
            second_diffed.set()
        return await load(conn, store, loads[-1])  # type: ignore[arg-type]

    append = lg.append
    appends = 0

    async def slow_first_append(*args: object, **kw: object) -> object:
        nonlocal appends
        appends += 1
        if appends == 1:
            await asyncio.wait_for(second_diffed.wait(), timeout=10)  # a guard, not a clock
        return await append(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(observe, "load_contacts", spy_load)
    monkeypatch.setattr(lg, "append", slow_first_append)
    src = Listing([["a", "b"], ["c", "d"], ["e"]], full_scan=False)
    stats = await observe_contacts(lg, projector, src, "r", BOUND)  # type: ignore[arg-type]
    assert (stats.items, stats.events) == (5, 5)
    assert loads == [["a", "b"], ["c", "d"], ["e"]]
    assert await lg.checkpoint(checkpoint_name("app", "contacts")) == "3"


async def test_a_contact_in_two_consecutive_batches_is_diffed_against_the_first(
    log: tuple[EventLog, Projector], monkeypatch: pytest.MonkeyPatch
) -> None:
    lg, projector = log
    monkeypatch.setattr(observe, "OBSERVE_BATCH", 1)
    src = Versions([[("a", "a@example.org")], [("a", "a.new@example.org")]])
    await observe_contacts(lg, projector, src, "r", BOUND)  # type: ignore[arg-type]
    kinds = [type(r.event) async for r in lg.read() if r.event.key == "a"]
    assert kinds == [ContactObserved, ContactChanged]
    assert (await load_contacts(lg.connection, "app", ["a"]))["a"].email == "a.new@example.org"
