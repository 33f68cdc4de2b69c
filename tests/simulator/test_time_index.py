"""Time-filtered listings answered from the time index are exactly the scan's answers: the
same contacts, in the same order, the same next cursor and the same ``contacts_count``, also
for a cursor continued after the account changed, whatever changed it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.clock import SimClock
from adapters.ctct_simulator.contact import Contact
from adapters.ctct_simulator.errors import ApiError
from adapters.ctct_simulator.imports import RowError, import_row
from adapters.ctct_simulator.query import ContactQuery, candidates, count, scan
from adapters.ctct_simulator.seed import seed_account
from adapters.ctct_simulator.timeindex import SortedKeys
from adapters.ctct_simulator.tracking import Tracking
from adapters.ctct_simulator.world import World

START = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
PERMISSIONS = ("explicit", "implicit", "not_set", "pending_confirmation", "unsubscribed")
STATUSES = ("active", "deleted", "unsubscribed", "not_set", "pending_confirmation", "all")
MUTATIONS = (
    "tick", "add", "edit", "unsubscribe", "permission", "join", "leave", "delete", "revive",
    "import", "world", "campaign", "skew", "assign",
)  # fmt: skip


def brute_page(account: Account, query: ContactQuery, after: int) -> tuple[list[int], int | None]:
    """The scan as it was before the index: every contact, in seq order."""
    pred = query.predicate()
    matches = [c.seq for c in account.contacts if c.seq > after and pred(c)]
    page = matches[: query.limit]
    return page, page[-1] if len(matches) > query.limit else None


def served(account: Account, query: ContactQuery, after: int) -> tuple[list[int], int | None]:
    page, nxt = scan(account, query, after)
    return [c.seq for c in page], nxt


def check_index(account: Account) -> None:
    """Every contact is in each index exactly at its current time, and nothing else is."""
    cs = account.contacts
    assert account.index.entries("updated") == sorted((c.updated_at, c.seq) for c in cs)
    assert account.index.entries("created") == sorted((c.created_at, c.seq) for c in cs)
    assert account.index.entries("optout") == sorted(
        (c.opt_out_date, c.seq) for c in cs if c.opt_out_date is not None
    )


class Model:
    """An account driven through every way the simulator changes contacts."""

    def __init__(self, seeded: int, seed: int) -> None:
        self.clock = SimClock(START, frozen=True)
        self.account = Account(self.clock, seed)
        seed_account(self.account, seeded, 3, seed)
        self.tracking = Tracking(self.account, seed)
        self.world = World(self.account, self.tracking, seed, audience=5)
        self.added = 0

    def times(self) -> list[int]:
        """Times worth filtering on: every contact's, and their neighbours."""
        found = {self.clock.now_ms()}
        for c in self.account.contacts:
            found.update((c.updated_at, c.created_at))
            if c.opt_out_date is not None:
                found.add(c.opt_out_date)
        return sorted({t + d for t in found for d in (-1, 0, 1)})

    def mutate(self, data: st.DataObject) -> None:
        acc = self.account
        kind = data.draw(st.sampled_from(MUTATIONS))
        contacts = acc.contacts
        c: Contact | None = (
            contacts[data.draw(st.integers(0, len(contacts) - 1))] if contacts else None
        )
        lists = list(acc.lists)
        try:
            if kind == "tick":
                self.clock.advance(seconds=data.draw(st.integers(0, 3)) / 1000)
            elif kind == "add":
                self.added += 1
                acc.add_contact(
                    f"new{self.added}@example.org",
                    source="Contact",
                    permission=data.draw(st.sampled_from(PERMISSIONS)),
                )
            elif kind == "import":
                known = [x.email for x in contacts]
                address = data.draw(st.sampled_from([f"new{self.added + 1}@example.org", *known]))
                if address.startswith("new"):
                    self.added += 1
                import_row(acc, {"email": address, "job_title": "Imported"}, lists[:1], 1)
            elif kind == "world":
                self.world.step(data.draw(st.integers(1, 4)))
            elif kind == "campaign":
                self.tracking.send_campaign("C", 5)
            elif kind == "skew":
                acc.skew_ms = data.draw(st.sampled_from([0, 0, 5, 1000, 10**9]))
            elif c is None:
                return
            elif kind == "edit":
                acc.edit_contact(c.contact_id, job_title=data.draw(st.sampled_from(["A", "B"])))
            elif kind == "unsubscribe":
                acc.unsubscribe(c.contact_id, source="Account")
            elif kind == "permission":
                acc.set_permission(c, data.draw(st.sampled_from(PERMISSIONS)), source="Account")
            elif kind == "join" and lists:
                acc.join_list(c.contact_id, data.draw(st.sampled_from(lists)))
            elif kind == "leave" and c.lists:
                acc.leave_list(c.contact_id, data.draw(st.sampled_from(c.lists)))
            elif kind == "delete":
                acc.delete_contact(c.contact_id)
            elif kind == "revive":
                acc.revive(c, "Account")
            elif kind == "assign":
                # Code that writes a time straight onto a contact (seeders, tests): the
                # property moves the contact in the index all the same.
                field = data.draw(st.sampled_from(["updated_at", "created_at", "opt_out_date"]))
                value = data.draw(st.sampled_from([*self.times()[:3], self.clock.now_ms()]))
                if field == "opt_out_date" and data.draw(st.booleans()):
                    c.opt_out_date = None
                else:
                    setattr(c, field, value)
        except (ApiError, RowError):
            pass  # a refused change (e.g. deleted contact) changes nothing

    def query(self, data: st.DataObject) -> ContactQuery:
        times = self.times()
        bounds: dict[str, Any] = {}
        for name in (
            "updated_after", "updated_before", "created_after", "created_before",
            "optout_after", "optout_before",
        ):  # fmt: skip
            if data.draw(st.integers(0, 3)) == 0:
                bounds[name] = data.draw(st.sampled_from(times))
        return ContactQuery(
            status=tuple(data.draw(st.lists(st.sampled_from(STATUSES), max_size=2))),
            lists=tuple(data.draw(st.lists(st.sampled_from(list(self.account.lists)), max_size=1))),
            include_count=True,
            limit=data.draw(st.integers(1, 6)),
            **bounds,
        )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seeded=st.integers(0, 25),
    seed=st.integers(0, 3),
    force_index=st.booleans(),
    data=st.data(),
)
def test_indexed_listing_equals_the_scan_across_mutations(
    seeded: int, seed: int, force_index: bool, data: st.DataObject
) -> None:
    model = Model(seeded, seed)
    acc = model.account
    if force_index:
        acc.index.scan_share = 0  # every time-filtered page through the index
    for _ in range(data.draw(st.integers(1, 4))):
        query = model.query(data)
        after = -1
        while True:
            for _ in range(data.draw(st.integers(0, 3))):
                model.mutate(data)
            assert count(acc, query) == sum(1 for c in acc.contacts if query.predicate()(c))
            expected = brute_page(acc, query, after)
            assert served(acc, query, after) == expected
            assert served(acc, query, after) == expected  # again: from the candidate cache
            if expected[1] is None:
                break
            after = expected[1]
    check_index(acc)


def test_a_narrow_filter_reads_only_its_candidates() -> None:
    model = Model(2000, 1)
    acc = model.account
    model.clock.advance(seconds=60)
    since = model.clock.now_ms()
    model.clock.advance(seconds=1)
    edited = [acc.contacts[s] for s in (5, 700, 1999)]
    for c in edited:
        if c.deleted:
            acc.revive(c, "Account")
        acc.edit_contact(c.contact_id, job_title="Moved")
    query = ContactQuery(status=("all",), updated_after=since, include_count=True)
    assert candidates(acc, query) == [5, 700, 1999]
    page, nxt = scan(acc, query, -1)
    assert [c.seq for c in page] == [5, 700, 1999] and nxt is None
    broad = ContactQuery(status=("all",), updated_after=0)
    assert candidates(acc, broad) is None  # matches everyone: a scan serves it sooner


def test_a_contact_created_with_an_opt_out_is_found_by_optout_after() -> None:
    model = Model(0, 0)
    before = model.clock.now_ms() - 1
    c = model.account.add_contact("gone@example.org", source="Contact", permission="unsubscribed")
    query = ContactQuery(optout_after=before, status=("all",))
    assert [x.seq for x in scan(model.account, query, -1)[0]] == [c.seq]
    model.account.set_permission(c, "explicit", source="Account")  # opted in: no opt-out date
    assert scan(model.account, query, -1) == ([], None)
    check_index(model.account)


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_sorted_keys_add_remove_count_between(n: int) -> None:
    keys = SortedKeys(range(0, 2 * n, 2))
    for k in range(1, 2 * n, 4):  # odd keys in, through bucket splits
        keys.add(k)
    for k in range(0, 2 * n, 8):
        keys.remove(k)
    want = sorted({*range(0, 2 * n, 2), *range(1, 2 * n, 4)} - set(range(0, 2 * n, 8)))
    assert list(keys) == want and len(keys) == len(want)
    for lo, hi in ((-5, 3), (7, 7), (10, 2 * n - 3), (2 * n, 3 * n + 1)):
        inside = [k for k in want if lo <= k < hi]
        assert list(keys.between(lo, hi)) == inside
        assert keys.count(lo, hi) == len(inside)
    with pytest.raises(KeyError):
        keys.remove(-1)
