"""``ccsync daemon``: sync cycles on a cadence, a clean stop on SIGTERM, health and metrics.

The daemon wires everything once, then runs one cycle every ``interval_seconds`` (± a random
``jitter_seconds``, so many daemons sharing one API key do not wake together). SIGTERM or SIGINT
asks the engine to stop after the page in hand, wakes the wait between cycles, closes everything
and exits 0. Errors keep their meaning from the one error tree:

* ``QuotaExhaustedError``: the day's API quota is spent; wait until it resets, then go on.
* any other ``FatalError`` (revoked authorisation, a broken log): a human must act. Stop, exit 2.
* any other ``CcsyncError`` (a store down, a timeout): log ``daemon.cycle_failed``, report
  ``failing`` on /healthz, and try again at the next cycle.

Nothing is lost by a crash either: every page is committed with its checkpoint, and the engine
catches its projections up when it starts, so a restarted daemon simply goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import structlog

from engine._daemon_http import Health, start_http
from engine._metrics import ApiUsage, DaemonMetrics
from engine.cycle import CycleSummary, SyncEngine
from engine.errors import (
    AuthorizationError,
    CcsyncError,
    FatalError,
    LogLockedError,
    QuotaExhaustedError,
)
from engine.log import EventLog
from engine.ports import utc_now
from engine.settings import Settings
from engine.status import read_status

__all__ = ["Daemon", "DaemonParts"]

_log: Final = structlog.get_logger("ccsync.daemon")

EXIT_FATAL: Final = 2  # as the CLI's exit code for a FatalError
EXIT_CRASHED: Final = 1

# What a person should do about a fatal error, said in the log line that stops the daemon.
_ACTIONS: Final[dict[type[FatalError], str]] = {
    AuthorizationError: "re-authorise with `ccsync auth login`, then start the daemon again",
    LogLockedError: "another ccsync process writes this log; stop it or use another log",
}


class DaemonParts(Protocol):
    """What the daemon needs once wired (``engine.bootstrap.Wired`` is one)."""

    @property
    def engine(self) -> SyncEngine: ...
    @property
    def ctct(self) -> ApiUsage: ...


class _LastCycle:
    """The last cycle as /healthz reports it (one per daemon; replaced after every cycle)."""

    def __init__(self, run_id: str | None, outcome: str, started: datetime, seconds: float):
        self.run_id = run_id
        self.outcome = outcome
        self.started_at = started
        self.finished_at = started + timedelta(seconds=seconds)
        self.seconds = seconds
        self.error: str | None = None


class Daemon:
    """Runs sync cycles until stopped. ``await Daemon(...).run()`` returns the exit code."""

    def __init__(
        self,
        settings: Settings,
        open_parts: Callable[[], AbstractAsyncContextManager[DaemonParts]],
        *,
        once: bool = False,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self._open_parts = open_parts
        self._once = once
        self._rng = rng or random.Random()
        self._clock = clock or utc_now
        self._stop = asyncio.Event()
        self._engine: SyncEngine | None = None
        self._api: ApiUsage | None = None
        self._reader: EventLog | None = None
        self.metrics = DaemonMetrics(lambda: self._api)
        self.cycles = 0
        self._in_cycle = False
        self._last: _LastCycle | None = None
        self._next_at: datetime | None = None

    # --- control -----------------------------------------------------------------------------

    def request_stop(self, reason: str = "requested") -> None:
        """Stop after the page in hand (SIGTERM/SIGINT call this); idempotent."""
        if self._stop.is_set():
            _log.info("daemon.stop_repeated", reason=reason)
            return
        self._stop.set()
        self._next_at = None
        _log.info("daemon.stopping", reason=reason, in_cycle=self._in_cycle)
        if self._engine is not None:
            self._engine.request_stop()

    def health(self) -> Health:
        """The daemon's state as /healthz reports it."""
        last = self._last
        failed = last is not None and last.outcome == "failed"
        return Health(
            status="stopping" if self._stop.is_set() else "failing" if failed else "ok",
            cycles=self.cycles,
            in_cycle=self._in_cycle,
            run_id=last.run_id if last else None,
            outcome=last.outcome if last else None,
            started_at=last.started_at if last else None,
            finished_at=last.finished_at if last else None,
            duration_seconds=last.seconds if last else None,
            error=last.error if last else None,
            next_cycle_at=self._next_at,
        )

    async def _render_metrics(self) -> bytes:
        return await self.metrics.render(self._reader)

    # --- the run -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve /healthz and /metrics and run cycles until stopped; returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            return await self._serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _serve(self) -> int:
        s = self.settings
        _log.info(
            "daemon.started",
            config=str(s.path),
            log=str(s.log_path),
            interval_seconds=s.interval_seconds,
            jitter_seconds=s.jitter_seconds,
            once=self._once,
            pid=os.getpid(),
        )
        server = await start_http(s.metrics_host, s.metrics_port, self.health, self._render_metrics)
        _log.info("daemon.listening", host=server.host, port=server.port)
        code: int | None = None  # None: an error escapes to the CLI, which prints it
        try:
            async with self._open_parts() as parts:
                self._engine, self._api = parts.engine, parts.ctct
                if self._stop.is_set():  # a signal came while wiring
                    parts.engine.request_stop()
                reader = await EventLog.open(s.log_path, writer=False)
                self._reader = reader
                try:
                    code = await self._cycles(parts.engine, reader)
                finally:
                    self._reader = None
                    await reader.close()
        finally:
            self._engine = None
            await server.close()
            if code is None:
                _log.error("daemon.stopped", cycles=self.cycles, reason="an error (see stderr)")
            else:
                _log.info("daemon.stopped", cycles=self.cycles, exit_code=code)
        return code

    async def _cycles(self, engine: SyncEngine, reader: EventLog) -> int:
        while not self._stop.is_set():
            began = time.monotonic()
            code, resume_at = await self._one(engine, reader)
            if code is not None:
                return code
            if self._once:
                return 0 if self._last and self._last.outcome in ("ok", "interrupted") else 1
            failed = self._last is not None and self._last.outcome == "failed"
            # After a failure the interval counts from its end: a store that is down and a cycle
            # that takes longer than the interval must not make back-to-back attempts.
            delay = self._delay(0.0 if failed else time.monotonic() - began, resume_at)
            self._next_at = self._clock() + timedelta(seconds=delay)
            self.metrics.next_cycle.set(self._next_at.timestamp())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return 0

    def _delay(self, elapsed: float, resume_at: datetime | None) -> float:
        s = self.settings
        delay = s.interval_seconds + self._rng.uniform(-s.jitter_seconds, s.jitter_seconds)
        delay = max(0.0, delay - elapsed)
        if resume_at is not None:
            # Spread the wake-ups after a quota reset too: every daemon on the key resets at once.
            wait = (resume_at - self._clock()).total_seconds()
            delay = max(delay, wait + self._rng.uniform(0, s.jitter_seconds))
        return delay

    async def _one(
        self, engine: SyncEngine, reader: EventLog
    ) -> tuple[int | None, datetime | None]:
        """One cycle; returns (exit code if the daemon must stop, when the quota resets)."""
        started = self._clock()
        began = time.monotonic()
        self._in_cycle = True
        self._next_at = None
        self.metrics.in_cycle.set(1)
        summary: CycleSummary | None = None
        error: CcsyncError | None = None
        try:
            summary = await engine.cycle()
        except CcsyncError as exc:
            error = exc
        except Exception:
            _log.exception("daemon.crashed")
            return EXIT_CRASHED, None
        finally:
            self._in_cycle = False
            self.metrics.in_cycle.set(0)
        seconds = time.monotonic() - began
        await self._settle(engine)
        await self._measure(reader)
        self.cycles += 1
        if summary is not None:
            self._last = _LastCycle(summary.run_id, summary.outcome, started, seconds)
            self.metrics.record_cycle(summary, seconds, self._clock())
            return None, None
        assert error is not None
        self.metrics.record_failure(error, seconds, self._clock())
        self._last = last = _LastCycle(await _last_run_id(reader), "failed", started, seconds)
        last.error = str(error)
        fields = {"run_id": last.run_id, "error": str(error), "error_type": type(error).__name__}
        if isinstance(error, QuotaExhaustedError):
            resume_at = _parse_reset(error.resets_at, self._clock())
            _log.warning("daemon.cycle_failed", **fields, resume_at=resume_at.isoformat())
            return None, resume_at
        if isinstance(error, FatalError):
            action = next((a for t, a in _ACTIONS.items() if isinstance(error, t)), None)
            _log.error("daemon.cycle_failed", **fields, fatal=True, action=action)
            return EXIT_FATAL, None
        _log.warning("daemon.cycle_failed", **fields)
        return None, None

    async def _settle(self, engine: SyncEngine) -> None:
        # Appends are folded as they are written; this catches up anything that was not (a
        # cycle that failed before its projector started), so /metrics, `ccsync status` and
        # the audit see the cycle that just ended, not only the next one.
        try:
            await engine.projector.catch_up()
        except CcsyncError as exc:
            _log.warning("daemon.catch_up_failed", error=str(exc))

    async def _measure(self, reader: EventLog) -> None:
        bound = self.settings.opt_out_bound_seconds
        try:
            await self.metrics.measure_cycle_end(reader, self._clock(), bound)
        except (CcsyncError, sqlite3.Error) as exc:  # e.g. no projections yet after a failure
            _log.warning("daemon.measure_failed", error=str(exc))


async def _last_run_id(reader: EventLog) -> str | None:
    try:
        runs = (await read_status(reader, datetime.now(UTC), runs=1, settled=False)).runs
    except CcsyncError:
        return None
    return runs[0].run_id if runs else None


def _parse_reset(text: str, now: datetime) -> datetime:
    """When a spent quota resets; a reset time we cannot read means the next UTC midnight."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        day = now.astimezone(UTC).date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return at
