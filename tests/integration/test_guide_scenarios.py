"""Constant Contact's syncing-data guide, scenario by scenario, on the real parts.

Each test runs the whole cycle (``wire`` + ``SyncEngine.cycle``) against the simulator on
loopback and the SQLite sample CRM, after an initial sync has settled, and checks what a user
would notice: the other store's state, the requests the engine sent (method, path, query, body,
from the simulator's request journal), the log's events where they are the evidence, and that
one more cycle issues no command. The guide: /work/shared/reference/syncing-data-guide.txt.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from adapters.ctct_simulator.contact import Contact, Phone, StreetAddress
from adapters.ctct_simulator.journal import RecordedRequest
from engine.bootstrap import Wired, wire
from engine.cli._demo_setup import prepare_folder
from engine.cycle import CycleSummary
from engine.events import (
    ContactChanged,
    EventBase,
    MembershipAdded,
    PageObserved,
    PermissionChanged,
    SyncRunStarted,
    TrackingRecorded,
)
from engine.settings import load_settings

pytestmark = pytest.mark.asyncio
E = TypeVar("E", bound=EventBase)

NOW_SQL = "strftime('%Y-%m-%d %H:%M:%f', 'now')"  # what the sample CRM stamps rows with
OVERLAP = timedelta(minutes=5)  # ccsync's default look-back on both sides


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(SimulatorConfig(contacts=120, seed=11, lists=4, campaigns=1)) as s:
        yield s


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def api_time(text: str) -> int:
    """An API time parameter (``2026-11-27T01:25:58.310Z``) in epoch milliseconds."""
    return ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def held(c: Contact) -> dict[str, Any]:
    """Everything a Constant Contact contact holds besides its permission, by value."""
    return {
        "email": c.email,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "job_title": c.job_title,
        "company_name": c.company_name,
        "birthday_month": c.birthday_month,
        "birthday_day": c.birthday_day,
        "anniversary": c.anniversary,
        "custom_fields": sorted(c.custom_fields),
        "phones": sorted((p.kind, p.phone_number) for p in c.phones),
        "addresses": sorted(
            (a.kind, a.street, a.city, a.state, a.postal_code, a.country) for a in c.addresses
        ),
        "lists": sorted(c.lists),
        "notes": c.notes,
        "taggings": c.taggings,
    }


def enrich(sim: Simulator) -> Contact:
    """Give one subscribed contact every kind of field a careless PUT would wipe."""
    acct = sim.account
    c = next(x for x in acct.contacts if not x.deleted and x.permission in ("explicit", "implicit"))
    now = sim.clock.now_ms()
    c.job_title, c.company_name = "Archivist", "Blue Heron Books"
    c.birthday_month, c.birthday_day, c.anniversary = 4, 17, "2019-06-01"
    c.phones = (
        Phone(
            phone_number_id=acct.new_id(),
            phone_number="+1-555-010-2030",
            kind="work",
            created_at=now,
            updated_at=now,
            source="Account",
        ),
    )
    c.addresses = (
        StreetAddress(
            street_address_id=acct.new_id(),
            kind="home",
            street="12 Quay St",
            city="Galway",
            postal_code="H91",
            country="Ireland",
            created_at=now,
            updated_at=now,
        ),
    )
    c.custom_fields = ((acct.custom_fields["tier"], "platinum"),)
    acct.commit(c, "Account")
    return c


class Synced:
    """A ccsync folder after its initial sync has settled, with the simulator journalling."""

    def __init__(self, folder: Path, sim: Simulator, wired: Wired) -> None:
        self.folder, self.sim, self.w = folder, sim, wired
        self.mark = 0  # log position before the scenario's change
        self.rich: Contact | None = None  # the contact holding every kind of field

    def app(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Run one statement on the app's database, committed; its rows."""
        with closing(sqlite3.connect(self.folder / "app.db")) as conn, conn:
            return conn.execute(sql, args).fetchall()

    def app_write(self, sql: str, *args: object) -> None:
        """A change made by the app itself (it stamps updated_at, as the sample CRM does)."""
        self.app(sql, *args)

    def app_row(self, email: str, columns: str) -> tuple[Any, ...]:
        [row] = self.app(f"SELECT {columns} FROM contacts WHERE lower(email) = ?", email)
        return row

    async def cycle(self) -> CycleSummary:
        summary = await self.w.engine.cycle()
        assert summary.outcome == "ok" and summary.failed == 0, summary
        return summary

    async def quiet(self) -> None:
        """One more cycle issues zero commands and sends Constant Contact no write."""
        self.sim.reset_requests()
        summary = await self.cycle()
        assert summary.commands == {}, summary.commands
        assert self.writes() == []

    def writes(self) -> list[RecordedRequest]:
        """What the engine asked Constant Contact to change (every non-GET /v3 request)."""
        return [r for r in self.sim.journal if r.method != "GET" and r.path.startswith("/v3/")]

    def gets(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.sim.journal if r.method == "GET" and r.path == path]

    async def events(self, kind: type[E], stream: str | None = None) -> list[tuple[str, E]]:
        """(stream, event) of type ``kind`` appended since ``mark`` (in ``stream`` if given)."""
        out = []
        async for rec in self.w.log.read(self.mark + 1):
            if isinstance(rec.event, kind) and stream in (None, rec.stream):
                out.append((rec.stream, rec.event))
        return out

    async def begin(self) -> None:
        """The scenario starts here: forget the requests so far, remember the log's head."""
        self.sim.reset_requests()
        self.mark = (await self.w.log.head()).position

    def list_id(self, name: str) -> str:
        return next(x.list_id for x in self.sim.account.lists.values() if x.name == name)

    def app_list_id(self, name: str) -> int:
        [(key,)] = self.app("SELECT id FROM lists WHERE name = ?", name)
        return int(key)

    def linked(
        self, where: Callable[[Contact], bool] = lambda c: True, *, skip: int = 0
    ) -> tuple[Contact, int]:
        """A live Constant Contact contact subscribed in both stores, for which ``where``
        holds (the ``skip``-th such), and its app key."""
        for c in self.sim.account.contacts:
            if c.deleted or c.permission not in ("explicit", "implicit") or not where(c):
                continue
            rows = self.app("SELECT id, email_status FROM contacts WHERE lower(email) = ?", c.email)
            if rows and rows[0][1] == "active":
                if skip == 0:
                    return c, int(rows[0][0])
                skip -= 1
        raise AssertionError("no such contact")


@asynccontextmanager
async def synced(
    folder: Path, sim: Simulator, *, source_of_record: str = "app", events_source: str = "app"
) -> AsyncIterator[Synced]:
    """Initial sync (the demo's config: List 1 = Newsletter and List 3 = Events follow the app,
    List 2 = Customers follows Constant Contact) run until it issues nothing more."""
    rich = enrich(sim)
    config = await prepare_folder(folder, sim, app_contacts=20)
    text = config.read_text()
    text = text.replace('source_of_record = "app"\n', f'source_of_record = "{source_of_record}"\n')
    events = 'ctct = "List 3"\napp = "Events"\nsource = "app"\n'
    assert events in text
    text = text.replace(events, events.replace('"app"\n', f'"{events_source}"\n'))
    config.write_text(text)
    async with wire(load_settings(config)) as w:
        h = Synced(folder, sim, w)
        h.rich = rich
        for _ in range(4):
            if not (await h.cycle()).commands:
                break
        else:
            raise AssertionError("the initial sync did not settle in four cycles")
        sim.start_journal()
        await h.quiet()
        await h.begin()
        yield h


async def last_bound(h: Synced) -> datetime:
    """The upper time bound of the last cycle before the scenario: the checkpoint it left."""
    bound = None
    async for rec in h.w.log.read(1, h.mark + 1):
        if isinstance(rec.event, SyncRunStarted):
            bound = rec.event.bound
    assert bound is not None
    return bound


def page_counts(events: list[tuple[str, PageObserved]], needle: str) -> list[int]:
    return [e.item_count for _, e in events if needle in e.request]


# --- 1. modified_since: only what changed since the last sync ---------------------------------


async def test_modified_since_incremental_sync_reads_only_contacts_changed_since_last_sync(
    tmp_path: Path, sim: Simulator
) -> None:
    # The guide's figure: Constant Contact is the primary store, the CRM follows.
    async with synced(tmp_path, sim, source_of_record="ctct") as h:
        since = await last_bound(h) - OVERLAP
        picks = [h.linked(skip=n) for n in range(3)]
        before = {r[0]: r for r in h.app("SELECT * FROM contacts ORDER BY id")}
        for n, (c, _) in enumerate(picks):
            sim.account.edit_contact(
                c.contact_id, first_name=f"Renamed{n}", job_title="Gardener", source="Account"
            )
        modified = [c for c in sim.account.contacts if not c.deleted and c.updated_at > ms(since)]
        assert len(modified) < len(sim.account.contacts) // 2  # an incremental read, not all

        summary = await h.cycle()

        # GET /contacts with updated_after = the last sync's bound minus the overlap, then the
        # opt-out and deletion sweeps from the same time; never an unfiltered (full) fetch.
        sweeps = [r.params for r in h.gets("/v3/contacts")]
        stamp = since.strftime("%Y-%m-%dT%H:%M:%S.") + f"{since.microsecond // 1000:03d}Z"
        assert [{k: v for k, v in p.items() if k not in ("include", "limit")} for p in sweeps] == [
            {"updated_after": stamp},
            {"optout_after": stamp},
            {"status": "deleted", "updated_after": stamp},
        ]
        assert all(p["limit"] == "500" and "list_memberships" in p["include"] for p in sweeps)
        pages = await h.events(PageObserved)
        assert page_counts(pages, f"&updated_after={stamp}")[:1] == [len(modified)]
        # Exactly the edited contacts changed in the app; every other row is untouched.
        assert summary.commands == {"contact.upsert": 3}
        after = {r[0]: r for r in h.app("SELECT * FROM contacts ORDER BY id")}
        changed = {k for k in after if after[k] != before.get(k)}
        assert changed == {key for _, key in picks}
        for n, (c, _) in enumerate(picks):
            assert h.app_row(c.email, "first_name, job_title") == (f"Renamed{n}", "Gardener")
            [(_, ev)] = await h.events(ContactChanged, f"ctct:contact:{c.contact_id}")
            assert ev.changes["first_name"].new == f"Renamed{n}"
        assert h.writes() == []  # nothing to send back to Constant Contact
        await h.quiet()


# --- 2. opt-outs, both ways --------------------------------------------------------------------


def sqlite_ms(when_ms: int) -> str:
    """Epoch milliseconds as the sample CRM's UTC text."""
    when = datetime.fromtimestamp(when_ms / 1000, UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


async def test_opt_out_in_constant_contact_that_did_not_move_updated_at_reaches_the_app(
    tmp_path: Path, sim: Simulator
) -> None:
    async with synced(tmp_path, sim) as h:
        c, key = h.linked()
        updated_at = c.updated_at
        sim.account.unsubscribe(c.contact_id, reason="too many emails", source="Contact")
        assert c.updated_at == updated_at  # invisible to updated_after: the API's pitfall
        opted_at = c.opt_out_date
        assert opted_at is not None

        summary = await h.cycle()

        # Found by the optout_after sweep, which the guide says to run every sync.
        [optout] = [r for r in h.gets("/v3/contacts") if "optout_after" in r.params]
        assert api_time(optout.params["optout_after"]) < opted_at
        # The log holds the opt-out as Constant Contact stated it: who, why, when.
        [(_, ev)] = await h.events(PermissionChanged, f"ctct:contact:{c.contact_id}")
        assert ev.old is not None and ev.old.status in ("explicit", "implicit")
        new = ev.new
        assert (new.status, new.source, new.reason) == (
            "unsubscribed",
            "Contact",
            "too many emails",
        )
        assert new.changed_at is not None and ms(new.changed_at) == opted_at
        # The app now has them unsubscribed, with the reason and Constant Contact's time.
        assert summary.commands == {"contact.unsubscribe": 1}
        assert h.app_row(c.email, "email_status, unsubscribe_reason, status_changed_at") == (
            "unsubscribed",
            "too many emails",
            sqlite_ms(opted_at),
        )
        assert h.writes() == []
        await h.quiet()
        [(_, seen)] = await h.events(PermissionChanged, f"app:contact:{key}")
        assert seen.new.status == "unsubscribed"


async def test_opt_out_in_the_app_reaches_constant_contact_with_its_reason(
    tmp_path: Path, sim: Simulator
) -> None:
    async with synced(tmp_path, sim) as h:
        c, key = h.linked()
        before = held(c)
        h.app_write(
            "UPDATE contacts SET email_status = 'unsubscribed', unsubscribe_reason = ?, "
            f"status_changed_at = {NOW_SQL}, updated_at = {NOW_SQL} WHERE id = ?",
            "asked us by phone",
            key,
        )
        [(changed_at,)] = h.app("SELECT status_changed_at FROM contacts WHERE id = ?", key)

        summary = await h.cycle()

        [(_, ev)] = await h.events(PermissionChanged, f"app:contact:{key}")
        new = ev.new
        assert (new.status, new.reason) == ("unsubscribed", "asked us by phone")
        assert new.changed_at is not None and sqlite_ms(ms(new.changed_at)) == changed_at
        assert summary.commands == {"contact.unsubscribe": 1}
        [put] = h.writes()
        assert (put.method, put.path) == ("PUT", f"/v3/contacts/{c.contact_id}")
        assert put.json()["email_address"] == {
            "address": c.email,
            "permission_to_send": "unsubscribed",
            "opt_out_reason": "asked us by phone",
        }
        assert (c.permission, c.opt_out_reason) == ("unsubscribed", "asked us by phone")
        assert held(c) == before  # nothing else about the contact moved
        await h.quiet()
        [(_, seen)] = await h.events(PermissionChanged, f"ctct:contact:{c.contact_id}")
        assert seen.new.status == "unsubscribed"


# --- 3. list memberships, with either store as the list's source of record ---------------------


async def test_list_led_by_the_app_joins_and_leaves_reach_constant_contact(
    tmp_path: Path, sim: Simulator
) -> None:
    # [[lists]] ctct = "List 1", app = "Newsletter", source = "app"
    async with synced(tmp_path, sim) as h:
        list_id, app_list = h.list_id("List 1"), h.app_list_id("Newsletter")
        c, key = h.linked(lambda c: list_id not in c.lists)
        h.app_write("INSERT INTO list_members (contact_id, list_id) VALUES (?, ?)", key, app_list)
        h.app_write(f"UPDATE contacts SET updated_at = {NOW_SQL} WHERE id = ?", key)

        summary = await h.cycle()

        assert summary.commands == {"membership.add": 1}
        [add] = h.writes()
        assert add.endpoint == "POST /v3/activities/add_list_memberships"
        assert add.json() == {"source": {"contact_ids": [c.contact_id]}, "list_ids": [list_id]}
        assert list_id in c.lists
        [(_, ev)] = await h.events(MembershipAdded, f"app:contact:{key}")
        assert ev.list_id == str(app_list)
        await h.quiet()

        await h.begin()
        h.app_write("DELETE FROM list_members WHERE contact_id = ? AND list_id = ?", key, app_list)
        h.app_write(f"UPDATE contacts SET updated_at = {NOW_SQL} WHERE id = ?", key)
        summary = await h.cycle()
        assert summary.commands == {"membership.remove": 1}
        [remove] = h.writes()
        assert remove.endpoint == "POST /v3/activities/remove_list_memberships"
        assert remove.json() == {"source": {"contact_ids": [c.contact_id]}, "list_ids": [list_id]}
        assert list_id not in c.lists
        await h.quiet()

        # A join made in Constant Contact on a list the app leads is undone there.
        await h.begin()
        sim.account.join_list(c.contact_id, list_id)
        summary = await h.cycle()
        assert summary.commands == {"membership.remove": 1}
        assert [r.endpoint for r in h.writes()] == ["POST /v3/activities/remove_list_memberships"]
        assert list_id not in c.lists
        sql = "SELECT 1 FROM list_members WHERE contact_id = ? AND list_id = ?"
        assert h.app(sql, key, app_list) == []
        await h.quiet()


async def test_list_led_by_constant_contact_joins_and_leaves_reach_the_app(
    tmp_path: Path, sim: Simulator
) -> None:
    # [[lists]] ctct = "List 2", app = "Customers", source = "ctct"
    async with synced(tmp_path, sim) as h:
        list_id, app_list = h.list_id("List 2"), h.app_list_id("Customers")
        c, key = h.linked(lambda c: list_id not in c.lists)

        def member() -> bool:
            sql = "SELECT 1 FROM list_members WHERE contact_id = ? AND list_id = ?"
            return bool(h.app(sql, key, app_list))

        sim.account.join_list(c.contact_id, list_id)
        summary = await h.cycle()
        assert summary.commands == {"membership.add": 1}
        assert member()
        [(_, ev)] = await h.events(MembershipAdded, f"ctct:contact:{c.contact_id}")
        assert ev.list_id == list_id
        assert h.writes() == []
        await h.quiet()

        await h.begin()
        sim.account.leave_list(c.contact_id, list_id)
        summary = await h.cycle()
        assert summary.commands == {"membership.remove": 1}
        assert not member()
        assert h.writes() == []
        await h.quiet()

        # A join made in the app on a list Constant Contact leads is undone in the app.
        await h.begin()
        h.app_write("INSERT INTO list_members (contact_id, list_id) VALUES (?, ?)", key, app_list)
        h.app_write(f"UPDATE contacts SET updated_at = {NOW_SQL} WHERE id = ?", key)
        summary = await h.cycle()
        assert summary.commands == {"membership.remove": 1}
        assert not member()
        assert list_id not in c.lists
        assert h.writes() == []
        await h.quiet()


@pytest.mark.parametrize("source", ["app", "ctct"])
async def test_the_configured_source_of_record_decides_a_list_membership_the_stores_disagree_on(
    tmp_path: Path, sim: Simulator, source: str
) -> None:
    # The same disagreement, two configs: [[lists]] ctct = "List 3", app = "Events", source = ?
    async with synced(tmp_path, sim, events_source=source) as h:
        list_id, app_list = h.list_id("List 3"), h.app_list_id("Events")
        c, key = h.linked(lambda x: list_id not in x.lists)
        h.app_write("INSERT INTO list_members (contact_id, list_id) VALUES (?, ?)", key, app_list)
        h.app_write(f"UPDATE contacts SET updated_at = {NOW_SQL} WHERE id = ?", key)

        summary = await h.cycle()

        sql = "SELECT count(*) FROM list_members WHERE contact_id = ? AND list_id = ?"
        [(in_app,)] = h.app(sql, key, app_list)
        if source == "app":  # the app's join is carried to Constant Contact
            assert summary.commands == {"membership.add": 1}
            assert [r.endpoint for r in h.writes()] == ["POST /v3/activities/add_list_memberships"]
            assert (list_id in c.lists, in_app) == (True, 1)
        else:  # Constant Contact's "not a member" wins: the app's join is undone
            assert summary.commands == {"membership.remove": 1}
            assert h.writes() == []
            assert (list_id in c.lists, in_app) == (False, 0)
        await h.quiet()


# --- 4. updates through bulk import: the email and only the changed fields ---------------------


async def test_profile_updates_go_through_bulk_import_carrying_only_the_changed_fields(
    tmp_path: Path, sim: Simulator
) -> None:
    async with synced(tmp_path, sim) as h:
        c1, k1 = h.linked(lambda c: bool(c.lists))
        # A second contact on one of the first one's lists: one import can carry both.
        c2, k2 = h.linked(lambda c: c is not c1 and bool(set(c.lists) & set(c1.lists)))
        before1, before2 = held(c1), held(c2)
        h.app_write(
            f"UPDATE contacts SET job_title = ?, updated_at = {NOW_SQL} WHERE id = ?",
            "Head Gardener",
            k1,
        )
        h.app_write(
            f"UPDATE contacts SET first_name = ?, company = ?, updated_at = {NOW_SQL} WHERE id = ?",
            "Zoë",
            "Acme Seeds",
            k2,
        )

        summary = await h.cycle()

        assert summary.commands == {"contact.upsert": 2}
        [imp] = h.writes()  # one bulk activity for both, no PUT
        assert imp.endpoint == "POST /v3/activities/contacts_json_import"
        rows = sorted(imp.json()["import_data"], key=lambda r: r["email"] == c2.email)
        assert rows == [
            {"email": c1.email, "job_title": "Head Gardener"},
            {"email": c2.email, "first_name": "Zoë", "company_name": "Acme Seeds"},
        ]
        # Constant Contact changed exactly those fields, and kept each contact's permission.
        # (Their lists are the next test's subject.)
        after1, after2 = held(c1), held(c2)
        for d in (before1, before2, after1, after2):
            d.pop("lists")
        assert after1 == {**before1, "job_title": "Head Gardener"}
        assert after2 == {**before2, "first_name": "Zoë", "company_name": "Acme Seeds"}
        assert {c1.permission, c2.permission} <= {"explicit", "implicit"}


async def test_a_profile_update_through_import_leaves_the_contacts_lists_alone(
    tmp_path: Path, sim: Simulator
) -> None:
    async with synced(tmp_path, sim) as h:
        list_id = h.list_id("List 1")
        c, key = h.linked(lambda x: list_id not in x.lists)
        before = held(c)
        h.app_write(
            f"UPDATE contacts SET job_title = ?, updated_at = {NOW_SQL} WHERE id = ?",
            "Head Gardener",
            key,
        )
        await h.cycle()
        assert held(c) == {**before, "job_title": "Head Gardener"}  # lists included
        await h.quiet()


# --- 5. a PUT never nulls a field ---------------------------------------------------------------


def put_view(c: Contact) -> dict[str, Any]:
    """What a complete PUT body must carry to leave ``c`` as it is."""
    core = {
        k: getattr(c, k)
        for k in (
            "first_name",
            "last_name",
            "job_title",
            "company_name",
            "birthday_month",
            "birthday_day",
            "anniversary",
        )
        if getattr(c, k) is not None
    }
    return {
        **core,
        "phone_numbers": sorted((p.kind, p.phone_number) for p in c.phones),
        "street_addresses": sorted(
            (a.kind, a.street, a.city, a.state, a.postal_code, a.country) for a in c.addresses
        ),
        "custom_fields": sorted(c.custom_fields),
    }


def body_view(body: dict[str, Any]) -> dict[str, Any]:
    core = {
        k: v
        for k, v in body.items()
        if k
        not in (
            "email_address",
            "update_source",
            "phone_numbers",
            "street_addresses",
            "custom_fields",
        )
    }
    return {
        **core,
        "phone_numbers": sorted(
            (p.get("kind"), p["phone_number"]) for p in body.get("phone_numbers", [])
        ),
        "street_addresses": sorted(
            (
                a.get("kind"),
                a.get("street"),
                a.get("city"),
                a.get("state"),
                a.get("postal_code"),
                a.get("country"),
            )
            for a in body.get("street_addresses", [])
        ),
        "custom_fields": sorted(
            (f["custom_field_id"], f["value"]) for f in body.get("custom_fields", [])
        ),
    }


async def test_the_unsubscribe_put_carries_every_field_the_contact_held(
    tmp_path: Path, sim: Simulator
) -> None:
    async with synced(tmp_path, sim) as h:
        c, key = h.linked(lambda x: x is h.rich)
        before, wanted = held(c), put_view(c)
        h.app_write(
            "UPDATE contacts SET email_status = 'unsubscribed', "
            f"status_changed_at = {NOW_SQL}, updated_at = {NOW_SQL} WHERE id = ?",
            key,
        )

        await h.cycle()

        [put] = [r for r in h.writes() if r.method == "PUT"]
        assert put.path == f"/v3/contacts/{c.contact_id}"
        assert body_view(put.json()) == wanted
        assert c.permission == "unsubscribed"
        assert held(c) == before
        await h.quiet()


async def test_a_field_cleared_in_the_app_is_cleared_by_a_put_that_keeps_every_other_field(
    tmp_path: Path, sim: Simulator
) -> None:
    # Imports cannot clear a field, so this is the one profile update that needs a PUT.
    async with synced(tmp_path, sim) as h:
        c, key = h.linked(lambda x: x is h.rich)
        before, wanted = held(c), put_view(c)
        h.app_write(
            f"UPDATE contacts SET job_title = NULL, updated_at = {NOW_SQL} WHERE id = ?", key
        )

        summary = await h.cycle()

        assert summary.commands == {"contact.upsert": 1}
        [put] = h.writes()
        assert (put.method, put.path) == ("PUT", f"/v3/contacts/{c.contact_id}")
        del wanted["job_title"]
        assert body_view(put.json()) == wanted
        assert "permission_to_send" not in put.json()["email_address"]  # never re-subscribes
        assert held(c) == {**before, "job_title": None}
        await h.quiet()


# --- 6. tracking data fetched since the last sync ----------------------------------------------


async def test_only_tracking_activity_new_since_the_last_sync_is_fetched_and_reaches_the_app(
    tmp_path: Path, sim: Simulator
) -> None:
    async with synced(tmp_path, sim) as h:
        activity = next(iter(sim.tracking.records))  # the seeded campaign's primary email
        kinds = {f"em_{k}s": k for k in ("send", "open", "click", "bounce", "forward", "optout")}

        def app_activities() -> list[tuple[Any, ...]]:
            return h.app(
                "SELECT c.email, a.kind, a.occurred_at FROM activities a "
                "JOIN contacts c ON c.id = a.contact_id WHERE a.campaign_activity_id = ?",
                activity,
            )

        def sim_activities() -> list[tuple[Any, ...]]:
            acct = sim.account
            return [
                (acct.by_id[r.contact_id].email, kinds[kind], sqlite_ms(r.created))
                for kind, recs in sim.tracking.records[activity].items()
                for r in recs
                if h.app(
                    "SELECT 1 FROM contacts WHERE lower(email) = ?", acct.by_id[r.contact_id].email
                )
            ]

        # The initial sync brought the campaign's whole history into the CRM, once.
        assert sorted(app_activities()) == sorted(sim_activities())
        (c1, k1), (c2, _) = h.linked(skip=0), h.linked(skip=1)
        sim.tracking.record(activity, c1, "em_opens", {"device_type": "Mobile"})
        link = {"device_type": "Mobile", "url_id": "1", "link_url": "https://example.org/a"}
        sim.tracking.record(activity, c1, "em_clicks", link)
        sim.tracking.record(activity, c2, "em_opens", {"device_type": "Desktop"})

        summary = await h.cycle()

        # v3 reports have no created_since. Constant Contact's counts say which reports moved
        # (opens and clicks here); each of those is read newest first, one page here, down to
        # what was recorded last time. Only the 3 new records are new facts.
        [emails] = h.gets("/v3/emails")
        assert "after_date" in emails.params
        [counts] = [r for r in sim.journal if r.path.startswith("/v3/reports/stats/")]
        assert counts.path.endswith(f"/email_campaign_activities/{activity}")
        reports = [r.path.rsplit("/", 1)[1] for r in sim.journal if "/tracking/" in r.path]
        assert sorted(reports) == ["clicks", "opens"]
        recorded = await h.events(TrackingRecorded)
        assert sorted((s, e.activity.kind) for s, e in recorded) == [
            (f"ctct:tracking:{c}", k)
            for c, k in sorted(
                [(c1.contact_id, "click"), (c1.contact_id, "open"), (c2.contact_id, "open")]
            )
        ]
        # The CRM's activities table holds exactly the history plus the 3 new rows: none twice.
        assert summary.commands == {"tracking.record": 2}  # one per contact
        assert sorted(app_activities()) == sorted(sim_activities())
        [(details,)] = h.app(
            "SELECT details FROM activities WHERE kind = 'click' AND contact_id = ? "
            "ORDER BY occurred_at DESC LIMIT 1",
            k1,
        )
        assert "https://example.org/a" in details
        await h.quiet()
        assert sorted(app_activities()) == sorted(sim_activities())
