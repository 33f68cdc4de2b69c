"""Writes cost no more requests than the API needs: activities submitted together and polled
together with a growing wait, one GET + one PUT per contact that needs a PUT, and the order of
changes to one contact kept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.constant_contact import CtctAdapter, RateBudget, open_ctct
from adapters.constant_contact.writes import membership_groups
from adapters.ctct_simulator import Simulator
from engine.commands import (
    AddToList,
    Command,
    DeleteContact,
    Outcome,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
)
from engine.errors import QuotaExhaustedError

from .conftest import Env, Recorder

CORE = ("first_name", "last_name", "job_title", "company_name", "birthday_month",
        "birthday_day", "anniversary")  # fmt: skip


class SlowActivities:
    """A sleep for the adapter under which the simulator's activities take ``seconds`` to run:
    each wait is recorded and none is real; once they add up, every queued activity ends."""

    def __init__(self, sim: Simulator, seconds: float) -> None:
        self.sim = sim
        self.seconds = seconds
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if sum(self.waits) >= self.seconds:
            await self.sim.drain_activities()


async def open_slow(env: Env, sleep: SlowActivities) -> CtctAdapter:
    def wrap(t: Any) -> Any:
        rec = Recorder(t)
        env.recorders.append(rec)
        return rec

    return await open_ctct(env.cfg, RateBudget(1000, 10_000), wrap_transport=wrap, sleep=sleep)


def polls(env: Env) -> list[str]:
    return [p for p in env.recorder.paths("GET") if p.startswith("/activities")]


def live(env: Env) -> list[Any]:
    return [c for c in env.sim.account.contacts if not c.deleted and c.permission != "unsubscribed"]


def lists(env: Env, n: int) -> list[str]:
    return [lid for lid, lst in env.sim.account.lists.items() if lst.deleted_at is None][:n]


@pytest.mark.asyncio
async def test_many_activities_are_polled_together_with_a_growing_wait(make_env: Any) -> None:
    env: Env = await make_env(
        contacts=200,
        sim_kw={"auto_process": False},
        activity_poll_interval=1,
        activity_poll_max=8,
    )
    people = live(env)[:40]
    targets = lists(env, 4)
    cmds: list[Command] = [
        AddToList(target="ctct", email=c.email.lower(), store_id=c.contact_id, list_id=lst)
        for k, lst in enumerate(targets)
        for c in people[k * 10 : k * 10 + 10]
        if lst not in c.lists
    ]
    doomed = live(env)[50]
    cmds.append(DeleteContact(target="ctct", email=doomed.email.lower(),
                              store_id=doomed.contact_id))  # fmt: skip
    sleep = SlowActivities(env.sim, seconds=40)
    async with await open_slow(env, sleep) as ctct:
        outcomes = await ctct.apply(cmds)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    posts = env.recorder.paths("POST")
    assert len(posts) == 5  # four lists, one delete: all submitted before the first poll
    # Waits double up to the cap; each round is one GET /activities for all five activities.
    assert sleep.waits == [1, 2, 4, 8, 8, 8, 8, 8]
    assert polls(env) == ["/activities"] * len(sleep.waits)
    assert doomed.deleted


@pytest.mark.asyncio
async def test_a_slow_activity_costs_few_polls_and_a_stuck_one_times_out(make_env: Any) -> None:
    env: Env = await make_env(
        contacts=50,
        sim_kw={"auto_process": False, "activity_chunk": 1},
        activity_poll_interval=1,
        activity_poll_max=30,
        activity_timeout=600,
    )
    c = live(env)[0]
    lst = next(lid for lid in lists(env, 8) if lid not in c.lists)
    add = AddToList(target="ctct", email=c.email.lower(), store_id=c.contact_id, list_id=lst)
    # Two activities in flight (the list poll does not advance them); ten minutes pass.
    other = live(env)[1]
    delete = DeleteContact(target="ctct", email=other.email.lower(), store_id=other.contact_id)
    sleep = SlowActivities(env.sim, seconds=10_000)
    async with await open_slow(env, sleep) as ctct:
        late = await ctct.apply([add, delete])
    assert [o.ok for o in late] == [False, False]
    assert all(o.retriable and o.error and "after 600s" in o.error for o in late)
    # 1+2+4+8+16 then 30 s at a time up to 600 s: 24 polls, where a fixed 1 s would cost 600.
    assert sleep.waits[:6] == [1, 2, 4, 8, 16, 30] and sum(sleep.waits) >= 600
    assert len(polls(env)) == len(sleep.waits) == 24


@pytest.mark.asyncio
async def test_a_field_clear_goes_through_get_and_put_and_nulls_nothing_else(
    make_env: Any,
) -> None:
    env: Env = await make_env(contacts=300)
    acct = env.sim.account
    c = next(c for c in live(env) if c.first_name and c.phones and c.lists and c.custom_fields)
    acct.edit_contact(
        c.contact_id, job_title="Chief", company_name="Acme", birthday_month=5, birthday_day=6,
        anniversary="2001-02-03",
    )  # fmt: skip
    before = {f: getattr(c, f) for f in CORE}
    subs = (c.phones, c.addresses, c.custom_fields, c.lists, c.taggings, c.permission)
    clear = UpsertContact(
        target="ctct", email=c.email.lower(), store_id=c.contact_id, fields={"job_title": None}
    )
    async with await env.open() as ctct:
        (out,) = await ctct.apply([clear])
    assert out.ok, out
    assert c.job_title is None
    assert {f: getattr(c, f) for f in CORE} == {**before, "job_title": None}
    assert (c.phones, c.addresses, c.custom_fields, c.lists, c.taggings, c.permission) == subs
    assert env.recorder.paths() == [f"/contacts/{c.contact_id}"] * 2  # GET, then PUT


@pytest.mark.asyncio
async def test_commands_for_one_contact_share_one_get_and_one_put(make_env: Any) -> None:
    env: Env = await make_env(contacts=100)
    c = next(c for c in live(env) if c.first_name and c.last_name)
    first = c.first_name
    cmds: list[Command] = [
        UpsertContact(target="ctct", email=c.email.lower(), store_id=c.contact_id,
                      fields={"last_name": None}),
        Unsubscribe(target="ctct", email=c.email.lower(), store_id=c.contact_id, reason="bye"),
        UpsertContact(target="ctct", email=c.email.lower(), store_id=c.contact_id,
                      fields={"job_title": "Boss"}, lists=lists(env, 1)),
    ]  # fmt: skip
    async with await env.open() as ctct:
        outcomes = await ctct.apply(cmds)
    assert all(o.ok for o in outcomes), outcomes
    assert (c.first_name, c.last_name, c.job_title) == (first, None, "Boss")
    assert c.permission == "unsubscribed" and c.opt_out_reason == "bye"
    # The upsert that an import could carry joins the PUT: one contact read and written once.
    assert env.recorder.paths() == [f"/contacts/{c.contact_id}"] * 2


@pytest.mark.asyncio
async def test_changes_to_one_contact_keep_their_order(make_env: Any) -> None:
    env: Env = await make_env(contacts=60)
    lst, other = lists(env, 2)
    gone = next(c for c in live(env) if lst not in c.lists)
    cmds: list[Command] = [
        # A new contact and its list membership: the membership waits for the import.
        UpsertContact(target="ctct", email="fresh@example.org", fields={"first_name": "F"},
                      lists=(other,)),
        AddToList(target="ctct", email="fresh@example.org", list_id=lst),
        # An opt-out and a delete of one contact: the delete comes after the PUT.
        Unsubscribe(target="ctct", email=gone.email.lower(), store_id=gone.contact_id),
        DeleteContact(target="ctct", email=gone.email.lower(), store_id=gone.contact_id),
    ]  # fmt: skip
    async with await env.open() as ctct:
        outcomes: list[Outcome] = await ctct.apply(cmds)
    assert all(o.ok for o in outcomes), outcomes
    fresh = env.sim.account.find_email("fresh@example.org")
    assert fresh is not None and {lst, other} <= set(fresh.lists)
    assert gone.deleted and gone.permission == "unsubscribed"
    assert env.recorder.paths("POST") == [
        "/activities/contacts_json_import",
        "/activities/add_list_memberships",
        "/activities/contact_delete",
    ]


def test_contacts_changing_the_same_lists_share_an_activity() -> None:
    def add(cid: str, lst: str) -> tuple[int, Command, str]:
        return (0, AddToList(target="ctct", email=f"{cid}@x.org", store_id=cid, list_id=lst), cid)

    both = [add(f"c{i}", lst) for i in range(600) for lst in ("l1", "l2")]
    groups = membership_groups(both)
    # 600 contacts joining the same two lists: 2 activities (<= 500 ids), not 4.
    assert [(ids, len({p[2] for p in g})) for ids, g in groups] == [
        (("l1", "l2"), 500),
        (("l1", "l2"), 100),
    ]
    mixed = [add("a", "l1"), add("a", "l2"), add("b", "l1"), add("c", "l2")]
    # Here one list per activity is fewer (2) than one per set of lists (3).
    assert sorted(ids for ids, _ in membership_groups(mixed)) == [("l1",), ("l2",)]
    removes = [(0, RemoveFromList(target="ctct", email="d@x.org", store_id="d", list_id="l9"), "d")]
    assert [ids for ids, _ in membership_groups(removes)] == [("l9",)]


@pytest.mark.asyncio
async def test_a_quota_spent_among_the_puts_stops_every_request(make_env: Any) -> None:
    env: Env = await make_env(
        contacts=60, rate_limits=True, sim_kw={"daily_quota": 5, "per_second": 1000}
    )
    people = live(env)[:8]
    cmds: list[Command] = [
        Unsubscribe(target="ctct", email=c.email.lower(), store_id=c.contact_id) for c in people
    ]
    async with await env.open() as ctct:
        with pytest.raises(QuotaExhaustedError):
            await ctct.apply(cmds)
        sent = len(env.recorder.api())
        await asyncio.sleep(0)  # nothing left running sends another request
        assert len(env.recorder.api()) == sent
    # Five answered; at most the three other PUTs already in flight (4 at once) were refused.
    assert 6 <= sent <= 8
    assert sum(c.permission == "unsubscribed" for c in people) == 1


@pytest.mark.asyncio
async def test_a_profile_update_and_a_list_join_of_one_contact_share_a_round(
    make_env: Any,
) -> None:
    env: Env = await make_env(
        contacts=100, sim_kw={"auto_process": False}, activity_poll_interval=1,
        activity_poll_max=8,
    )  # fmt: skip
    c = next(c for c in live(env) if c.lists)
    join = next(lid for lid in lists(env, 8) if lid not in c.lists)
    cmds: list[Command] = [
        UpsertContact(target="ctct", email=c.email.lower(), store_id=c.contact_id,
                      fields={"job_title": "Lead"}, member_of=tuple(c.lists)),
        AddToList(target="ctct", email=c.email.lower(), store_id=c.contact_id, list_id=join),
    ]  # fmt: skip
    sleep = SlowActivities(env.sim, seconds=3)
    async with await open_slow(env, sleep) as ctct:
        outcomes = await ctct.apply(cmds)
    assert all(o.ok for o in outcomes), outcomes
    assert c.job_title == "Lead" and join in c.lists
    assert env.recorder.paths("POST") == [
        "/activities/contacts_json_import",
        "/activities/add_list_memberships",
    ]
    assert sleep.waits == [1, 2] and polls(env) == ["/activities"] * 2  # one round for both


@pytest.mark.asyncio
async def test_leaving_the_list_an_import_goes_through_waits_for_the_import(
    make_env: Any,
) -> None:
    env: Env = await make_env(contacts=100)
    c = next(c for c in live(env) if len(c.lists) == 1)
    (only,) = c.lists
    cmds: list[Command] = [
        UpsertContact(target="ctct", email=c.email.lower(), store_id=c.contact_id,
                      fields={"job_title": "Lead"}, member_of=(only,)),
        RemoveFromList(target="ctct", email=c.email.lower(), store_id=c.contact_id, list_id=only),
    ]  # fmt: skip
    async with await env.open() as ctct:
        outcomes = await ctct.apply(cmds)
    assert all(o.ok for o in outcomes), outcomes
    # The import names the contact's list (it must name one); the removal comes after it ended.
    assert c.job_title == "Lead" and c.lists == ()
    sent = [(r.method, p) for r, p in zip(env.recorder.api(), env.recorder.paths(), strict=True)]
    assert [m for m, _ in sent] == ["POST", "GET", "POST", "GET"]
    assert [p for m, p in sent if m == "POST"] == [
        "/activities/contacts_json_import",
        "/activities/remove_list_memberships",
    ]
