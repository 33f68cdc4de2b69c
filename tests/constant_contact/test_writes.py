"""Commands applied through the safe paths only, checked in the simulator's account."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.constant_contact import CtctAdapter
from engine.commands import (
    AddToList,
    Command,
    DeleteContact,
    Outcome,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
    command_id,
)

from .conftest import Env

pytestmark = pytest.mark.asyncio
NEVER = ("/contacts/sign_up_form", "/contacts/resubscribe")


def live(env: Env, *, unsubscribed: bool = False) -> list[Any]:
    return [
        c
        for c in env.sim.account.contacts
        if not c.deleted and (c.permission == "unsubscribed") == unsubscribed
    ]


async def apply(env: Env, commands: list[Command]) -> tuple[list[Outcome], CtctAdapter]:
    async with await env.open() as ctct:
        outcomes = await ctct.apply(commands)
    assert not any(p.startswith(NEVER) for p in env.recorder.paths())
    assert [o.command_id for o in outcomes] == [command_id(c) for c in commands]
    return outcomes, ctct


def a_list(env: Env) -> str:
    return next(lid for lid, lst in env.sim.account.lists.items() if lst.deleted_at is None)


async def test_upsert_imports_only_the_given_fields(make_env: Any) -> None:
    env: Env = await make_env(contacts=60)
    c = next(c for c in live(env) if c.last_name and c.job_title and c.lists)
    before = (c.last_name, c.job_title, c.permission, c.phones, sorted(c.lists))
    cmd = UpsertContact(
        target="ctct",
        email=c.email.lower(),
        store_id=c.contact_id,
        fields={"first_name": "Imported"},
        member_of=tuple(sorted(c.lists)),
    )
    (out,), _ = await apply(env, [cmd])
    assert out.ok, out
    assert c.first_name == "Imported"
    # Imported through a list it was already on: no other field and no membership moved.
    assert (c.last_name, c.job_title, c.permission, c.phones, sorted(c.lists)) == before
    assert env.recorder.paths("POST") == ["/activities/contacts_json_import"]


async def test_an_existing_contact_on_no_list_is_updated_by_put_and_joins_no_list(
    make_env: Any,
) -> None:
    """An import must name a list and joins every row to it: not for a contact on none."""
    env: Env = await make_env(contacts=60)
    c = next(c for c in live(env) if c.last_name)
    for lid in list(c.lists):
        env.sim.account.remove_from_list(c.contact_id, lid)
    before = (c.last_name, c.permission, c.phones)
    cmd = UpsertContact(
        target="ctct", email=c.email.lower(), store_id=c.contact_id, fields={"first_name": "Put"}
    )
    (out,), _ = await apply(env, [cmd])
    assert out.ok, out
    assert (c.first_name, c.lists) == ("Put", ())
    assert (c.last_name, c.permission, c.phones) == before
    assert env.recorder.paths("POST") == []
    assert env.recorder.paths("PUT") == [f"/contacts/{c.contact_id}"]


async def test_an_import_never_resubscribes(make_env: Any) -> None:
    """Pitfall 6: an unsubscribed contact's profile changes, its permission does not."""
    env: Env = await make_env(contacts=60)
    c = live(env)[0]
    env.sim.account.unsubscribe(c.contact_id, reason="stop", source="Contact")
    lst = next(lid for lid in env.sim.account.lists if lid not in c.lists)
    cmd = UpsertContact(
        target="ctct", email=c.email.lower(), store_id=c.contact_id,
        fields={"company_name": "NewCo"}, member_of=(lst,),
    )  # fmt: skip
    (out,), _ = await apply(env, [cmd])
    assert out.ok
    assert c.company_name == "NewCo"
    assert c.permission == "unsubscribed"
    assert lst not in c.lists
    assert out.detail is not None and "not added to lists" in out.detail


async def test_new_contacts_are_created_by_import_into_their_lists(make_env: Any) -> None:
    env: Env = await make_env(contacts=10)
    lst = a_list(env)
    cmds: list[Command] = [
        UpsertContact(
            target="ctct", email=f"new{i}@example.org", fields={"first_name": f"N{i}"}, lists=(lst,)
        )
        for i in range(3)
    ]
    outcomes, ctct = await apply(env, cmds)
    assert all(o.ok for o in outcomes)
    for i in range(3):
        c = env.sim.account.find_email(f"new{i}@example.org")
        assert c is not None and c.first_name == f"N{i}" and lst in c.lists
        assert c.permission == "implicit"
    assert ctct.requests_made <= 2 + 1  # one import, polled (activities may finish at once)


async def test_a_bad_row_fails_only_its_own_command(make_env: Any) -> None:
    env: Env = await make_env(contacts=10)
    lst = a_list(env)
    good = UpsertContact(target="ctct", email="good@example.org", fields={}, lists=(lst,))
    bad = UpsertContact(
        target="ctct", email="bad@example.org", fields={"cf:no_such_field": "x"}, lists=(lst,)
    )
    (ok, failed), _ = await apply(env, [good, bad])
    assert ok.ok
    assert not failed.ok and failed.error is not None and "cf:no_such_field" in failed.error


async def test_unsubscribe_put_never_nulls_a_field(make_env: Any) -> None:
    """Pitfall 8: PUT carries every core field read first; sub-resources stay."""
    env: Env = await make_env(contacts=300)
    acct = env.sim.account
    c = next(c for c in live(env) if c.first_name and c.phones and c.lists)
    acct.edit_contact(
        c.contact_id, job_title="Chief", company_name="Acme", birthday_month=5, birthday_day=6,
        anniversary="2001-02-03",
    )  # fmt: skip
    core = ("first_name", "last_name", "job_title", "company_name", "birthday_month",
            "birthday_day", "anniversary")  # fmt: skip
    before = {f: getattr(c, f) for f in core}
    subs = (c.phones, c.addresses, c.custom_fields, c.lists, c.taggings)
    cmd = Unsubscribe(
        target="ctct",
        email=c.email.lower(),
        store_id=c.contact_id,
        reason="asked",
        source="Contact",
    )
    (out,), _ = await apply(env, [cmd])
    assert out.ok, out
    assert c.permission == "unsubscribed"
    assert c.opt_out_reason == "asked" and c.opt_out_source == "Contact"
    assert {f: getattr(c, f) for f in core} == before
    assert (c.phones, c.addresses, c.custom_fields, c.lists, c.taggings) == subs
    assert env.recorder.paths() == [f"/contacts/{c.contact_id}", f"/contacts/{c.contact_id}"]
    # applying it again is harmless and sends no PUT
    (again,), _ = await apply(env, [cmd])
    assert again.ok and again.detail == "already unsubscribed"
    assert env.recorder.paths("PUT") == []


async def test_email_change_goes_through_put_and_keeps_the_id(make_env: Any) -> None:
    env: Env = await make_env(contacts=30)
    c = live(env)[0]
    name = c.first_name
    cmd = UpsertContact(
        target="ctct", email=c.email.lower(), store_id=c.contact_id, fields={},
        new_email="renamed@example.org",
    )  # fmt: skip
    (out,), _ = await apply(env, [cmd])
    assert out.ok, out
    assert c.email == "renamed@example.org" and c.first_name == name
    assert env.sim.account.find_email("renamed@example.org") is c
    assert env.recorder.paths("PUT") == [f"/contacts/{c.contact_id}"]


async def test_membership_changes_go_in_batches_of_500(make_env: Any) -> None:
    env: Env = await make_env(contacts=800)
    lst = a_list(env)
    targets = [c for c in live(env) if lst not in c.lists][:600]
    cmds: list[Command] = [
        AddToList(target="ctct", email=c.email.lower(), store_id=c.contact_id, list_id=lst)
        for c in targets
    ]
    outcomes, _ = await apply(env, cmds)
    assert all(o.ok for o in outcomes)
    assert all(lst in c.lists for c in targets)
    assert env.recorder.paths("POST") == ["/activities/add_list_memberships"] * 2
    removes: list[Command] = [
        RemoveFromList(target="ctct", email=c.email.lower(), store_id=c.contact_id, list_id=lst)
        for c in targets[:10]
    ]
    outcomes, _ = await apply(env, removes)
    assert all(o.ok for o in outcomes)
    assert not any(lst in c.lists for c in targets[:10])


async def test_delete_goes_through_the_bulk_activity(make_env: Any) -> None:
    env: Env = await make_env(contacts=30)
    victims = live(env)[:2]
    cmds: list[Command] = [
        DeleteContact(target="ctct", email=c.email.lower(), store_id=c.contact_id) for c in victims
    ]
    outcomes, _ = await apply(env, cmds)
    assert all(o.ok for o in outcomes)
    assert all(c.deleted for c in victims)
    assert env.recorder.paths("POST") == ["/activities/contact_delete"]


async def test_missing_contact_comes_back_as_that_commands_failure(make_env: Any) -> None:
    env: Env = await make_env(contacts=10)
    ghost = Unsubscribe(
        target="ctct", email="ghost@example.org", store_id="00000000-0000-0000-0000-000000000000"
    )
    other = Unsubscribe(target="app", email="x@example.org")
    (out, wrong), _ = await apply(env, [ghost, other])
    assert not out.ok and out.error is not None and "no contact" in out.error
    assert not wrong.ok
