"""`ccsync daemon` as an operator runs it: a subprocess against a simulator and a SQLite app.

It syncs on its interval, reports on /healthz and /metrics, keeps going when a store fails,
and stops on SIGTERM or SIGINT with exit 0 and a log that verifies and replays.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.constant_contact import StoredTokens
from adapters.constant_contact.tokens import write_private_file
from adapters.ctct_simulator import FaultConfig, Simulator, SimulatorConfig
from engine.cli._demo_setup import prepare_folder
from tests.e2e._poll import DEADLINE, wait_for

BIG, PAGES = 1200, 30  # the interrupted initial sync: contacts in Constant Contact, pages


class Daemon:
    """A `ccsync daemon` subprocess, its JSON log file and its HTTP port."""

    def __init__(self, config: Path, *args: str) -> None:
        self.config = config
        self.stderr_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "daemon", "--config", str(config), *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.port = wait_for(lambda: self._listening_port(), "the daemon.listening line")

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.lines() if d.get("event") == name]

    def _listening_port(self) -> int | None:
        exited = self.proc.poll() is not None
        found = self.events("daemon.listening")
        if found:
            return int(found[0]["port"])
        if exited:
            pytest.fail(f"daemon exited {self.proc.returncode}: {self.stderr_path.read_text()}")
        return None

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def health(self) -> tuple[int, dict[str, Any]]:
        code, body = self.get("/healthz")
        return code, json.loads(body)

    def wait_health(self, cond: Callable[[int, dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            code, h = self.health()
            return h if cond(code, h) else None

        return wait_for(probe, what)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, body = self.get("/metrics")
        assert code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode())
            for s in fam.samples
        }

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"no exit within {DEADLINE}s of {sig.name}: {self.stderr_path.read_text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**os.environ, "CCSYNC_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_log_sound(config: Path, *, replay: bool = False) -> None:
    """`ccsync log verify` passes (and with ``replay``, `ccsync replay --check` too)."""
    verify = cli(config, "log", "verify", "--log", str(config.parent / "ccsync.db"))
    assert verify.returncode == 0, verify.stderr + verify.stdout
    if replay:
        check = cli(config, "replay", "--check")
        assert check.returncode == 0, check.stderr + check.stdout


def runs(config: Path) -> list[dict[str, Any]]:
    status = cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    found: list[dict[str, Any]] = json.loads(status.stdout)["runs"]
    return found


def configure(config: Path, *, interval: int = 1, **ctct: object) -> Path:
    """Cycles every ``interval`` s without jitter, metrics on a free port, extra [ctct] keys."""
    text = config.read_text()
    text = text.replace("interval_seconds = 60", f"interval_seconds = {interval}")
    text = text.replace("jitter_seconds = 5", "jitter_seconds = 0")
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in ctct.items())
    text = text.replace("[ctct]\n", f"[ctct]\n{extra}")
    config.write_text(text + "\n[daemon]\nmetrics_port = 0\n")
    return config


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator.start_in_thread(SimulatorConfig(contacts=300, seed=7, lists=4, campaigns=2))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:  # a failed test must not leave a daemon running
            d.kill()


def test_daemon_syncs_reports_and_stops_cleanly_on_sigterm(
    tmp_path: Path, sim: Simulator, daemons: list[Daemon]
) -> None:
    config = configure(asyncio.run(prepare_folder(tmp_path, sim, app_contacts=40, seed=3)))
    d = Daemon(config)
    daemons.append(d)

    h = d.wait_health(lambda code, h: h["cycles"] >= 2, "two cycles")
    code, h = d.health()
    assert code == 200 and h["status"] == "ok" and h["outcome"] == "ok"
    assert h["run_id"] and h["finished_at"] and h["next_cycle_at"]

    m = d.metrics()
    assert m[("ccsync_cycles_total", (("outcome", "ok"),))] >= 2
    assert m[("ccsync_events_observed_total", (("kind", "contacts"), ("store", "ctct")))] >= 300
    assert m[("ccsync_api_requests_total", ())] > 0
    assert 0 < m[("ccsync_api_budget_remaining", ())] < 10_000
    assert m[("ccsync_last_cycle_duration_seconds", ())] > 0
    assert (
        "ccsync_checkpoint_lag_seconds",
        (("checkpoint", "observe.ctct.contacts"), ("store", "ctct")),
    ) in m
    assert m[("ccsync_commands_pending", ())] == 0
    assert m[("ccsync_oldest_unpropagated_optout_seconds", ())] >= 0
    # Seen and carried by the next cycle, confirmed by the one after; and 15 minutes.
    assert m[("ccsync_optout_bound_seconds", ())] == 2 * (1 + 0) + 900

    assert d.stop(signal.SIGTERM) == 0
    names = [x["event"] for x in d.lines() if str(x.get("event", "")).startswith("daemon.")]
    assert names[:2] == ["daemon.started", "daemon.listening"]
    assert names[-2:] == ["daemon.stopping", "daemon.stopped"]
    assert len(d.events("sync.cycle_finished")) >= 2
    assert_log_sound(config)
    finished = [r for r in runs(config) if r["outcome"] == "ok"]
    assert len(finished) >= 2
    assert h["run_id"] in {r["run_id"] for r in finished}


def test_daemon_reports_a_failing_store_and_recovers_when_it_returns(
    tmp_path: Path, sim: Simulator, daemons: list[Daemon]
) -> None:
    config = configure(
        asyncio.run(prepare_folder(tmp_path, sim, app_contacts=20, seed=4)), retries=1
    )
    sim.set_faults(FaultConfig(error_rate=1.0))  # every /v3 answer is a 500 or a 503
    d = Daemon(config)
    daemons.append(d)

    h = d.wait_health(lambda code, h: code == 503, "a failed cycle")
    assert h["status"] == "failing" and h["outcome"] == "failed" and h["error"]
    failed = d.events("daemon.cycle_failed")
    assert failed and failed[0]["error_type"] == "RetriableError" and failed[0]["run_id"]

    sim.set_faults(FaultConfig())
    h = d.wait_health(lambda code, h: code == 200 and h["outcome"] == "ok", "a recovered cycle")
    assert h["status"] == "ok" and h["error"] is None
    m = d.metrics()
    assert m[("ccsync_cycles_total", (("outcome", "failed"),))] >= 1
    assert m[("ccsync_cycle_errors_total", (("error", "RetriableError"),))] >= 1
    assert m[("ccsync_cycles_total", (("outcome", "ok"),))] >= 1

    assert d.stop(signal.SIGINT) == 0
    assert_log_sound(config)
    outcomes = {r["outcome"] for r in runs(config)}
    assert {"failed", "ok"} <= outcomes


def test_sigterm_or_sigkill_during_a_big_initial_sync_and_a_restart_finishes_it(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    big = Simulator.start_in_thread(SimulatorConfig(contacts=BIG, seed=9, lists=4, campaigns=1))
    try:
        config = configure(
            asyncio.run(prepare_folder(tmp_path, big, app_contacts=30, seed=5, tracking=False)),
            interval=600,
            page_size=BIG // PAGES,
        )
        big.set_faults(FaultConfig(latency_ms=150))  # seconds of initial sync
        d = Daemon(config)
        daemons.append(d)
        pages = lambda: big.call(lambda: big.requests["GET /v3/contacts"])  # noqa: E731
        wait_for(lambda: pages() >= 3 or None, "three contact pages fetched")
        _, h = d.health()
        assert h["in_cycle"] and h["cycles"] == 0

        assert d.stop(signal.SIGTERM) == 0
        fetched = pages()
        assert fetched < PAGES, "the daemon fetched every page instead of stopping"
        assert_log_sound(config, replay=True)
        (last,) = runs(config)
        assert last["outcome"] == "interrupted"

        # A crash: SIGKILL a second daemon mid-sync. The kernel releases the log's writer lock.
        crashing = Daemon(config)
        daemons.append(crashing)
        wait_for(lambda: pages() >= fetched + 3 or None, "three more contact pages fetched")
        crashing.kill()

        # A restart goes on from the checkpoint and finishes the sync.
        big.set_faults(FaultConfig())
        before = pages()
        again = Daemon(config, "--once")
        daemons.append(again)
        assert again.proc.wait(timeout=120) == 0, again.stderr_path.read_text()[-3000:]
        assert pages() - before <= PAGES - before + 4, (
            "the restart did not go on from the checkpoint"
        )
        assert_log_sound(config)
        # Newest first: the restart, the killed run (never finished), the interrupted one.
        assert [r["outcome"] for r in runs(config)] == ["ok", None, "interrupted"]
    finally:
        big.stop()


def test_a_spent_daily_quota_waits_for_its_reset_and_the_wait_ends_on_sigterm(
    tmp_path: Path, sim: Simulator, daemons: list[Daemon]
) -> None:
    config = configure(
        asyncio.run(prepare_folder(tmp_path, sim, app_contacts=10, seed=6)), daily_budget=3
    )
    d = Daemon(config)
    daemons.append(d)

    h = d.wait_health(lambda code, h: h["cycles"] >= 1 and h["next_cycle_at"], "the quota wait")
    (failed,) = d.events("daemon.cycle_failed")
    assert failed["error_type"] == "QuotaExhaustedError"
    # The next cycle waits for the reset (00:00 UTC), not for the 1 s interval.
    assert h["status"] == "failing"
    next_at = datetime.fromisoformat(h["next_cycle_at"])
    assert next_at >= datetime.fromisoformat(failed["resume_at"]) > datetime.now(UTC)
    assert d.stop(signal.SIGTERM) == 0
    assert len(d.events("sync.cycle_finished")) == 1
    assert_log_sound(config)


def test_revoked_authorisation_stops_the_daemon_with_exit_2_and_says_what_to_do(
    tmp_path: Path, sim: Simulator, daemons: list[Daemon]
) -> None:
    config = configure(asyncio.run(prepare_folder(tmp_path, sim, app_contacts=10, seed=6)))
    revoked = StoredTokens.issued("not-a-token", "not-a-refresh-token", 3600, datetime.now(UTC))
    write_private_file(config.parent / "tokens.json", msgspec.json.encode(revoked))
    d = Daemon(config)
    daemons.append(d)

    assert d.proc.wait(timeout=DEADLINE) == 2
    (failed,) = d.events("daemon.cycle_failed")
    assert failed["fatal"] is True and failed["error_type"] == "AuthorizationError"
    assert "ccsync auth login" in failed["action"]
    assert d.events("daemon.stopped")[0]["exit_code"] == 2
    assert_log_sound(config)
