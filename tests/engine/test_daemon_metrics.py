"""The daemon's per-cycle gauges: the commands not yet settled, and what a scrape shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine._metrics import DaemonMetrics
from engine.cycle import SyncEngine
from engine.log import EventLog
from engine.policy import Policy
from tests.engine.fakes import FakeStore

pytestmark = pytest.mark.asyncio


def _value(text: bytes, name: str) -> float:
    return next(
        s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == name
    )


def _samples(text: bytes, name: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == name:
                out[(s.labels["target"], s.labels["kind"], s.labels["status"])] = s.value
    return out


async def test_unsettled_commands_are_shown_until_observation_confirms_them(
    tmp_path: Path,
) -> None:
    ctct, app = FakeStore("ctct"), FakeStore("app")
    for i in range(3):
        ctct.add(f"p{i}@example.org", first_name="Ann")
    ctct.opt_out(ctct.add("out@example.org", first_name="Bo"))
    async with await EventLog.open(tmp_path / "log.db") as log:
        engine = SyncEngine(log, ctct, app, Policy(), clock=lambda: ctct.now.replace(year=2100))
        metrics = DaemonMetrics()
        later = datetime.now(UTC) + timedelta(minutes=5)  # five minutes after the first run
        async with await EventLog.open(tmp_path / "log.db", writer=False) as reader:
            await engine.cycle()  # creates the four in the app, and the opt-out with them
            await metrics.measure_cycle_end(reader, later, 60)
            text = await metrics.render(reader)
            first = _samples(text, "ccsync_commands_unsettled")
            age = _value(text, "ccsync_oldest_unpropagated_optout_seconds")
            await engine.cycle()  # observes the app: the stores agree
            await metrics.measure_cycle_end(reader, later, 60)
            text = await metrics.render(reader)
            second = _samples(text, "ccsync_commands_unsettled")
            age_after = _value(text, "ccsync_oldest_unpropagated_optout_seconds")
    assert first == {
        ("app", "contact.upsert", "applied"): 4,
        ("app", "contact.unsubscribe", "applied"): 1,
    }
    assert second == {}
    # Carried to the app, not yet seen there: owed since the first run, which started just
    # after ``later`` was taken (give or take a wall-clock step: CI once saw 300.0002 s).
    assert 240 < age < 301
    assert age_after == 0  # seen there: confirmed


async def test_a_refused_resubscribe_and_a_rejected_record_are_counted(tmp_path: Path) -> None:
    """An alert on these counters tells the operator to look at `ccsync audit blocked` and
    `ccsync audit rejected`."""
    ctct, app = FakeStore("ctct"), FakeStore("app")
    c = ctct.add("ann@example.org", first_name="Ann")
    a = app.add("ann@example.org", first_name="Ann")
    async with await EventLog.open(tmp_path / "log.db") as log:
        engine = SyncEngine(log, ctct, app, Policy())
        metrics = DaemonMetrics()
        await engine.cycle()
        ctct.opt_out(c, reason="too many emails")
        metrics.record_cycle(await engine.cycle(), 1.0, datetime.now(UTC))  # the app follows
        app.opt_in(a, source="Account")  # a CRM user re-subscribes her: refused
        app.reject_next("bob-1", "email", "invalid email address 'bob@'")
        metrics.record_cycle(await engine.cycle(), 1.0, datetime.now(UTC))
        text = await metrics.render(None)
    assert _value(text, "ccsync_decisions_blocked_total") == 1
    assert _value(text, "ccsync_records_rejected_total") == 1
