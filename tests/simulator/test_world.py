"""The living account: deterministic from its seed, and moving the timestamps the way the
sync guide's table says (profile and list changes move updated_at; opt-outs do not)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from tests.simulator.client import SpecClient

START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _config(seed: int) -> SimulatorConfig:
    return SimulatorConfig(
        contacts=400, seed=seed, lists=5, campaigns=2, start=START, frozen_clock=True
    )


def _state(sim: Simulator) -> list[bytes]:
    return [c.encoded(63) for c in sim.account.contacts]


@pytest.mark.asyncio
async def test_same_seed_same_account_and_same_changes() -> None:
    async with run_simulator(_config(5)) as a, run_simulator(_config(5)) as b:
        assert _state(a) == _state(b)
        assert a.client_id == b.client_id
        events_a = [a.world.step(1) for _ in range(50)] + [a.world.step(150)]
        events_b = [b.world.step(1) for _ in range(50)] + [b.world.step(150)]
        assert events_a == events_b
        assert _state(a) == _state(b)
        assert a.tracking.by_contact.keys() == b.tracking.by_contact.keys()
    async with run_simulator(_config(6)) as c:
        assert _state(c) != _state(a)


@pytest.mark.asyncio
async def test_world_changes_move_the_right_timestamps() -> None:
    async with run_simulator(_config(9)) as sim:
        kinds = set()
        for _ in range(300):
            sim.clock.advance(seconds=1)
            before = {
                c.contact_id: (c.updated_at, c.email_updated_at) for c in sim.account.contacts
            }
            for event in sim.world.step(1):
                kinds.add(event.kind)
                if event.contact_id is None or event.contact_id not in before:
                    continue
                c = sim.account.contact(event.contact_id)
                updated, email_updated = before[event.contact_id]
                if event.kind == "unsubscribe":
                    assert c.updated_at == updated and c.email_updated_at > email_updated
                    assert c.permission == "unsubscribed" and c.opt_out_source == "Contact"
                elif event.kind in (
                    "contact_edit",
                    "account_edit",
                    "join_list",
                    "leave_list",
                    "delete",
                ):
                    assert c.updated_at > updated, event
        assert {
            "unsubscribe",
            "contact_edit",
            "account_edit",
            "join_list",
            "sign_up",
            "open",
        } <= kinds


@pytest.mark.asyncio
async def test_world_changes_are_visible_through_the_api(sim: Simulator, api: SpecClient) -> None:
    sim.clock.advance(seconds=1)
    since = sim.clock.now()
    sim.clock.advance(seconds=1)
    events = sim.world.step(40)
    stamp = since.isoformat().replace("+00:00", "Z")
    changed = {c["contact_id"] for c in await api.all_contacts(updated_after=stamp, status="all")}
    opted = {c["contact_id"] for c in await api.all_contacts(optout_after=stamp, status="all")}
    for e in events:
        if e.kind in (
            "contact_edit",
            "account_edit",
            "join_list",
            "leave_list",
            "sign_up",
            "delete",
        ):
            assert e.contact_id in changed, e
        if e.kind == "unsubscribe":
            assert e.contact_id in opted, e


@pytest.mark.asyncio
async def test_account_exposes_campaigns_and_world_opens_come_from_recipients(
    sim: Simulator,
) -> None:
    assert len(sim.account.campaigns) == 2
    events = sim.world.step(200)
    recipients = {
        r.contact_id for records in sim.tracking.records.values() for r in records["em_sends"]
    }
    opens = [e for e in events if e.kind == "open"]
    assert opens and all(e.contact_id in recipients for e in opens)


@pytest.mark.asyncio
async def test_world_steps_can_be_limited_to_some_kinds_of_change() -> None:
    async with run_simulator(_config(4)) as sim:
        campaigns = len(sim.account.campaigns)
        sent = sim.world.step(3, kinds=("campaign",))
        assert [e.kind for e in sent] == ["campaign"] * 3
        assert len(sim.account.campaigns) == campaigns + 3
        kinds = {e.kind for e in sim.world.step(200, kinds=("open", "unsubscribe"))}
        assert kinds <= {"open", "unsubscribe", "skipped"} and "open" in kinds
        assert len(sim.account.campaigns) == campaigns + 3
        with pytest.raises(ValueError, match="kinds: unknown kind fly_away"):
            sim.world.step(1, kinds=("open", "fly_away"))
