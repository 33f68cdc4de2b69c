"""`ccsync audit` as an auditor uses it: a scripted opt-out's whole history, and violations."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.ctct_simulator import Simulator, SimulatorConfig
from engine.cli._demo_setup import prepare_folder


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CCSYNC_CONFIG": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sync(config: Path) -> None:
    done = cli(config, "sync")
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, Simulator]]:
    sim = Simulator.start_in_thread(SimulatorConfig(contacts=200, seed=21, lists=4, campaigns=2))
    try:
        yield asyncio.run(prepare_folder(tmp_path, sim, app_contacts=20, seed=2)), sim
    finally:
        sim.stop()


def test_audit_of_a_scripted_opt_out_names_its_times_and_command(
    folder: tuple[Path, Simulator],
) -> None:
    config, sim = folder
    sync(config)
    person = sim.call(
        lambda: next(
            c for c in sim.account.contacts if not c.deleted and c.permission != "unsubscribed"
        )
    )
    sim.call(lambda: sim.account.unsubscribe(person.contact_id, reason="moved away"))
    opted_out_at = datetime.fromtimestamp(person.opt_out_date / 1000).astimezone()
    sync(config)  # sees the opt-out, unsubscribes the app
    sync(config)  # re-observes the app: confirmed

    done = cli(config, "audit", "opt-outs", "--email", person.email.upper(), "--format", "json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["store"] == "ctct"
    assert row["source"] == "Contact"
    assert row["reason"] == "moved away"
    happened = datetime.fromisoformat(row["happened_at"].replace("Z", "+00:00"))
    assert abs(happened - opted_out_at) < timedelta(milliseconds=2)
    assert row["state"] == "confirmed"
    assert row["seen_at"] <= row["applied_at"] <= row["confirmed_at"]
    assert row["latency_seconds"] > 0
    status = json.loads(cli(config, "status", "--json").stdout)
    assert status["commands"].get("confirmed", 0) >= 1
    # The day's API use, summed from the recorded cycles (the simulator counted the same).
    assert status["api_requests_today"] == sim.call(lambda: sum(sim.requests.values()))
    history = cli(config, "audit", "contact", person.email)
    assert history.returncode == 0
    assert row["command_id"][:12] in history.stdout
    assert (
        "permission explicit -> unsubscribed" in history.stdout
        or "-> unsubscribed" in history.stdout
    )


def test_violations_find_a_send_after_an_opt_out_and_nothing_else(
    folder: tuple[Path, Simulator],
) -> None:
    config, _sim = folder
    sync(config)
    clean = cli(config, "audit", "opt-outs", "--violations", "--format", "json")
    assert clean.returncode == 0, clean.stdout
    assert json.loads(clean.stdout) == []
    log = sqlite3.connect(config.parent / "ccsync.db")
    email, sent_at = log.execute(
        "SELECT email, created_time FROM p_tracking WHERE kind = 'send' ORDER BY email LIMIT 1"
    ).fetchone()
    log.close()
    # Plant it: the app says this person opted out a day before Constant Contact mailed them.
    before = datetime.fromisoformat(sent_at.replace("Z", "+00:00")) - timedelta(days=1)
    with sqlite3.connect(config.parent / "app.db") as app:
        changed = app.execute(
            "UPDATE contacts SET email_status = 'unsubscribed', status_changed_at = ?, "
            "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE lower(email) = ?",
            (before.isoformat(), email),
        ).rowcount
    assert changed == 1
    sync(config)
    sync(config)
    found = cli(config, "audit", "opt-outs", "--violations", "--format", "json")
    assert found.returncode == 1
    violations = json.loads(found.stdout)
    # Every send the planted opt-out precedes is one violation; nothing else is flagged.
    assert violations
    assert {(v["kind"], v["email"]) for v in violations} == {("send-after-optout", email)}
    assert all(v["at"] > before.isoformat() for v in violations)


def test_operator_scripts_report_the_month_and_a_list_as_of_a_past_time(
    folder: tuple[Path, Simulator],
) -> None:
    config, sim = folder
    sync(config)
    before_optout = datetime.now().astimezone()

    def a_list_1_member() -> Any:
        list_1 = next(x.list_id for x in sim.account.lists.values() if x.name == "List 1")
        return next(
            c
            for c in sim.account.contacts
            if not c.deleted and c.permission != "unsubscribed" and list_1 in c.lists
        )

    person = sim.call(a_list_1_member)
    sim.call(lambda: sim.account.unsubscribe(person.contact_id, reason="moved away"))
    sync(config)
    sync(config)
    month = datetime.now().astimezone().strftime("%Y-%m")
    report = subprocess.run(
        [sys.executable, "scripts/compliance_report.py", "--config", str(config), "--month", month],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    mine = [r for r in rows if r["email"] == person.email]
    assert [(r["store"], r["state"], r["reason"]) for r in mine] == [
        ("ctct", "confirmed", "moved away")
    ]

    def members(at: datetime) -> list[dict[str, str]]:
        done = subprocess.run(
            [sys.executable, "scripts/list_as_of.py", "--config", str(config),
             "--list", "List 1", "--as-of", at.isoformat()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return list(csv.DictReader(io.StringIO(done.stdout)))

    then, now = members(before_optout), members(datetime.now().astimezone())
    # The past shows them on the list and subscribed; today, on the list and unsubscribed.
    assert [m["permission"] for m in then if m["email"] == person.email] in (
        ["explicit"],
        ["implicit"],
    )
    assert [m["permission"] for m in now if m["email"] == person.email] == ["unsubscribed"]


def test_audit_held_names_the_contact_whose_activity_has_nowhere_to_go(
    folder: tuple[Path, Simulator],
) -> None:
    """A subscriber who was mailed, then deleted from Constant Contact before ccsync's first
    sync, is never created in the app: her opens and sends wait in the log, and the operator
    can list her, with why."""
    config, sim = folder

    def gone() -> Any:
        mailed = {
            r.contact_id for rs in sim.tracking.records.values() for v in rs.values() for r in v
        }
        her = next(c for c in sim.account.contacts if c.contact_id in mailed and not c.deleted)
        sim.account.delete_contact(her.contact_id)
        return her

    her = sim.call(gone)
    sync(config)
    held = cli(config, "audit", "held", "--format", "json")
    assert held.returncode == 0, held.stderr
    [row] = json.loads(held.stdout)
    assert (row["contact_id"], row["email"]) == (her.contact_id, her.email.lower())
    assert row["reason"] == "deleted in Constant Contact before ccsync created it in the app"
    assert row["activities"] >= 1 and row["first_at"] <= row["last_at"]


def test_audit_lists_the_refused_resubscribe_and_the_rejected_record(
    folder: tuple[Path, Simulator],
) -> None:
    """An operator asks what ccsync refused to do and what it could not take in: the CRM's
    re-subscribe of someone who opted out in Constant Contact, and a Constant Contact record
    over the API's field limit. Output piped into a reader that stops early (`| head`) ends
    quietly."""
    config, sim = folder
    sync(config)
    person, bad = sim.call(
        lambda: [
            c for c in sim.account.contacts if not c.deleted and c.permission != "unsubscribed"
        ][:2]
    )
    sim.call(lambda: sim.account.unsubscribe(person.contact_id, reason="moved away"))
    sim.call(lambda: sim.account.edit_contact(bad.contact_id, first_name="x" * 60))  # limit: 50
    sync(config)  # the app gets the opt-out; the long name is rejected
    with sqlite3.connect(config.parent / "app.db") as app:  # a CRM user re-subscribes her
        changed = app.execute(
            "UPDATE contacts SET email_status = 'active', "
            "status_changed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), "
            "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE lower(email) = ?",
            (person.email.lower(),),
        ).rowcount
    assert changed == 1
    sync(config)

    blocked = cli(config, "audit", "blocked", "--email", person.email.upper(), "--format", "json")
    assert blocked.returncode == 0, blocked.stderr
    [row] = json.loads(blocked.stdout)
    assert (row["store"], row["contact_id"], row["action"]) == (
        "ctct",
        person.contact_id,
        "resubscribe",
    )
    assert "opted out in Constant Contact" in row["reason"]
    later = cli(config, "audit", "blocked", "--since", "2999-01-01T00:00:00Z", "--format", "json")
    assert json.loads(later.stdout) == []

    rejected = cli(config, "audit", "rejected", "--store", "ctct", "--format", "csv")
    assert rejected.returncode == 0, rejected.stderr
    rows = list(csv.DictReader(io.StringIO(rejected.stdout)))
    assert {(r["record"], r["field"]) for r in rows} == {(bad.contact_id, "first_name")}
    assert "50" in rows[0]["problem"]
    assert (
        json.loads(cli(config, "audit", "rejected", "--store", "app", "--format", "json").stdout)
        == []
    )

    log = str(config.parent / "ccsync.db")
    with subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "log", "show", "--log", log],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as shown:
        assert shown.stdout is not None and shown.stderr is not None
        assert json.loads(shown.stdout.readline())["position"] == 1
        shown.stdout.close()  # the reader stops (`| head -1`); thousands of events are left
        assert shown.wait(timeout=60) == 141
        assert shown.stderr.read() == b""
