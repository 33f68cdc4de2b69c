"""Kill `ccsync sync` with SIGKILL at random moments, restart it, and compare the outcome with
an uninterrupted run on an identical world: same stores, no duplicated records, a sound log."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.ctct_simulator import Simulator, SimulatorConfig
from engine.cli._demo_setup import prepare_folder

KILLS = 12
SIM = SimulatorConfig(contacts=400, seed=11, lists=4, campaigns=2)


def ccsync(config: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CCSYNC_CONFIG": str(config)}
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def run_ok(config: Path, *args: str) -> None:
    proc = ccsync(config, *args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err.decode()[-2000:]  # 1: a partial cycle (store refusals)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Simulator, Path, Simulator]]:
    sims = [Simulator.start_in_thread(SIM), Simulator.start_in_thread(SIM)]
    try:
        folders = [tmp_path / "calm", tmp_path / "crashy"]
        configs = [
            asyncio.run(prepare_folder(f, s, app_contacts=60, seed=5))
            for f, s in zip(folders, sims, strict=True)
        ]
        yield configs[0], sims[0], configs[1], sims[1]
    finally:
        for s in sims:
            s.stop()


def ctct_state(sim: Simulator) -> dict[str, tuple[object, ...]]:
    def snap() -> dict[str, tuple[object, ...]]:
        names = {lst.list_id: lst.name for lst in sim.account.lists.values()}
        out: dict[str, tuple[object, ...]] = {}
        for c in sim.account.contacts:
            assert c.email not in out, f"duplicate contact {c.email} in Constant Contact"
            lists = tuple(sorted(names[i] for i in c.lists))
            out[c.email] = (c.first_name, c.last_name, c.permission, c.deleted, lists)
        return out

    return sim.call(snap)


def app_state(config: Path) -> tuple[dict[str, tuple[object, ...]], int]:
    with sqlite3.connect(config.parent / "app.db") as conn:
        rows = conn.execute(
            "SELECT lower(c.email), c.first_name, c.last_name, c.email_status, "
            "(SELECT group_concat(l.name) FROM (SELECT l.name FROM list_members m "
            " JOIN lists l ON l.id = m.list_id WHERE m.contact_id = c.id ORDER BY l.name) l) "
            "FROM contacts c"
        ).fetchall()
        activities = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT contact_id || kind || campaign_activity_id "
            "|| occurred_at) FROM activities"
        ).fetchone()
    out: dict[str, tuple[object, ...]] = {}
    for email, *rest in rows:
        assert email not in out, f"duplicate contact {email} in the app"
        out[email] = tuple(rest)
    assert activities[0] == activities[1], "duplicated tracking rows in the app"
    return out, activities[0]


@pytest.mark.slow
def test_sigkill_at_random_points_changes_nothing_in_the_outcome(
    world: tuple[Path, Simulator, Path, Simulator],
) -> None:
    calm, calm_sim, crashy, crashy_sim = world
    rng = random.Random(2026)
    for _ in range(3):
        run_ok(calm, "sync")

    for _ in range(KILLS):
        proc = ccsync(crashy, "sync")
        try:
            proc.wait(timeout=rng.uniform(0.6, 2.6))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            assert proc.stderr is not None
            proc.stderr.close()
    for _ in range(3):
        run_ok(crashy, "sync")

    assert ctct_state(crashy_sim) == ctct_state(calm_sim)
    assert app_state(crashy) == app_state(calm)
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "log",
            "verify",
            "--log",
            str(crashy.parent / "ccsync.db"),
        ],
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr.decode()
    replay = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", "--check", "--config", str(crashy)],
        capture_output=True,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr.decode() + replay.stdout.decode()
