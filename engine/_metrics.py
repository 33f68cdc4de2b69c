"""The daemon's Prometheus metrics, on a registry of its own (never the process-global one).

Two kinds of figures: counters the daemon bumps after each cycle (cycles by outcome, events and
records observed, commands issued, cycle duration), and a snapshot read from the log when
/metrics is scraped (checkpoint lag, commands by kind and status, API budget). The snapshot is
read through a separate read-only connection, so a scrape never waits for the writer and never
sees a half-written page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Final, Protocol

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.audit import UnpropagatedWatch
from engine.cycle import CycleSummary
from engine.log import EventLog
from engine.status import read_status
from projections.schema import UNSETTLED

__all__ = ["ApiUsage", "BudgetView", "DaemonMetrics", "LogSnapshot"]

# A burst of scrapes (several Prometheus servers, a curl loop) shares one read of the log.
_MIN_REFRESH_SECONDS: Final = 1.0


class BudgetView(Protocol):
    """What the metrics read from the Constant Contact adapter's rate budget."""

    @property
    def requests_today(self) -> int: ...
    @property
    def daily_budget(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def quota_exhausted_until(self) -> datetime | None: ...


class ApiUsage(Protocol):
    """The Constant Contact adapter as the daemon sees it: a request count and its budget."""

    @property
    def requests_made(self) -> int: ...
    def budget_status(self) -> BudgetView: ...


class LogSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Figures read from the log's projections at scrape time."""

    events: int = 0
    projected: int = 0
    lag: dict[str, float] = {}  # checkpoint name -> seconds since it last advanced
    failed: int = 0
    pending: int = 0


def _store_of(checkpoint: str) -> str:
    # Observation checkpoints are named observe.<store>.<what>; the rest belong to the engine.
    parts = checkpoint.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "observe" else "engine"


async def read_snapshot(log: EventLog, now: datetime) -> LogSnapshot:
    """Read the scrape-time figures from ``log`` (a reader connection)."""
    status = await read_status(log, now, runs=0, settled=False)
    return LogSnapshot(
        events=status.events,
        projected=status.projected,
        lag={c.name: max(0.0, c.lag_seconds) for c in status.checkpoints},
        failed=status.commands.get("failed", 0),
        pending=status.pending,
    )


class _ScrapeCollector(Collector):
    """Yields the latest log snapshot and the adapter's live request figures."""

    def __init__(self, api: Callable[[], ApiUsage | None]) -> None:
        self.snapshot: LogSnapshot | None = None
        self._api = api
        # (age in seconds or None when nothing is pending, monotonic time it was measured at)
        self.optout_age: tuple[float | None, float] | None = None
        self.optout_bound = 0.0
        self.commands: dict[tuple[str, str, str], int] | None = None  # (target, kind, status)

    def collect(self) -> Iterator[Metric]:
        api = self._api()
        if api is not None:
            yield CounterMetricFamily(
                "ccsync_api_requests",
                "Constant Contact API requests sent by this process (retries included)",
                value=api.requests_made,
            )
            budget = api.budget_status()
            yield GaugeMetricFamily(
                "ccsync_api_requests_today",
                "API requests counted against today's quota (UTC day)",
                value=budget.requests_today,
            )
            yield GaugeMetricFamily(
                "ccsync_api_daily_budget", "API requests allowed per day", value=budget.daily_budget
            )
            yield GaugeMetricFamily(
                "ccsync_api_budget_remaining", "API requests left today", value=budget.remaining
            )
            until = budget.quota_exhausted_until
            yield GaugeMetricFamily(
                "ccsync_api_quota_exhausted_until_timestamp_seconds",
                "When the spent daily quota resets (0: not exhausted)",
                value=until.timestamp() if until is not None else 0.0,
            )
        if self.optout_age is not None:
            age, at = self.optout_age
            # Measured after the last cycle; until the next one changes it, the age just grows.
            yield GaugeMetricFamily(
                "ccsync_oldest_unpropagated_optout_seconds",
                "Age of the oldest opt-out the other store does not yet confirm (0: none)",
                value=0.0 if age is None else age + time.monotonic() - at,
            )
            yield GaugeMetricFamily(
                "ccsync_optout_bound_seconds",
                "How soon an opt-out must propagate ([sync] opt_out_bound_seconds)",
                value=self.optout_bound,
            )
        if self.commands is not None:
            cmds = GaugeMetricFamily(
                "ccsync_commands_unsettled",
                "Commands not yet settled (issued, applied awaiting confirmation, failed) by "
                "target store, kind and status, as of the last cycle",
                labels=["target", "kind", "status"],
            )
            for (target, kind, status), n in sorted(self.commands.items()):
                cmds.add_metric([target, kind, status], n)
            yield cmds
        snap = self.snapshot
        if snap is None:
            return
        yield GaugeMetricFamily("ccsync_log_events", "Events in the log", value=snap.events)
        yield GaugeMetricFamily(
            "ccsync_log_projected_position", "Log position the projections reached", snap.projected
        )
        lag = GaugeMetricFamily(
            "ccsync_checkpoint_lag_seconds",
            "Seconds since each checkpoint last advanced",
            labels=["checkpoint", "store"],
        )
        for name, seconds in sorted(snap.lag.items()):
            lag.add_metric([name, _store_of(name)], seconds)
        yield lag
        yield GaugeMetricFamily(
            "ccsync_commands_failed", "Commands whose last attempt failed", value=snap.failed
        )
        yield GaugeMetricFamily(
            "ccsync_commands_pending",
            "Commands issued without an outcome (retried at the next cycle)",
            value=snap.pending,
        )


class DaemonMetrics:
    """Every metric the daemon exposes, on its own ``CollectorRegistry``."""

    def __init__(self, api: Callable[[], ApiUsage | None] = lambda: None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cycles = Counter("ccsync_cycles", "Sync cycles, by outcome", ["outcome"], registry=r)
        self.cycle_errors = Counter(
            "ccsync_cycle_errors", "Cycles that raised, by error type", ["error"], registry=r
        )
        self.events = Counter(
            "ccsync_events_observed",
            "Change events appended by observation, by store and kind",
            ["store", "kind"],
            registry=r,
        )
        self.records = Counter(
            "ccsync_records_observed",
            "Records read by observation, by store and kind",
            ["store", "kind"],
            registry=r,
        )
        self.rejected = Counter(
            "ccsync_records_rejected", "Records rejected as invalid (named in the log)", registry=r
        )
        self.blocked = Counter(
            "ccsync_decisions_blocked",
            "Actions refused for consent, new this cycle (ccsync audit blocked)",
            registry=r,
        )
        self.issued = Counter(
            "ccsync_commands_issued", "Commands issued, by kind", ["kind"], registry=r
        )
        self.applied = Counter("ccsync_commands_applied", "Commands applied", registry=r)
        self.failures = Counter("ccsync_commands_failures", "Command attempts failed", registry=r)
        self.duration = Gauge(
            "ccsync_last_cycle_duration_seconds", "Wall time of the last cycle", registry=r
        )
        self.phase = Gauge(
            "ccsync_last_cycle_phase_seconds",
            "Wall time of the last complete cycle's phases",
            ["phase"],
            registry=r,
        )
        self.finished = Gauge(
            "ccsync_last_cycle_finished_timestamp_seconds",
            "When the last cycle ended (Unix time)",
            registry=r,
        )
        self.next_cycle = Gauge(
            "ccsync_next_cycle_timestamp_seconds", "When the next cycle starts", registry=r
        )
        self.in_cycle = Gauge("ccsync_cycle_in_progress", "1 while a cycle runs", registry=r)
        self._scrape = _ScrapeCollector(api)
        r.register(self._scrape)
        self._refreshed = -_MIN_REFRESH_SECONDS
        self._optouts = UnpropagatedWatch()

    def record_cycle(self, summary: CycleSummary, seconds: float, now: datetime) -> None:
        """Count a cycle that returned (ok, partial or interrupted)."""
        self.cycles.labels(summary.outcome).inc()
        for name, n in summary.events.items():
            self.events.labels(*_split(name)).inc(n)
        for name, n in summary.observed.items():
            self.records.labels(*_split(name)).inc(n)
        for kind, n in summary.commands.items():
            self.issued.labels(kind).inc(n)
        self.applied.inc(summary.applied)
        self.failures.inc(summary.failed)
        self.rejected.inc(summary.rejected)
        self.blocked.inc(summary.blocked)
        for phase, s in summary.durations.items():
            self.phase.labels(phase).set(s)
        self._ended(seconds, now)

    def record_failure(self, error: Exception, seconds: float, now: datetime) -> None:
        """Count a cycle that raised ``error``."""
        self.cycles.labels("failed").inc()
        self.cycle_errors.labels(type(error).__name__).inc()
        self._ended(seconds, now)

    def _ended(self, seconds: float, now: datetime) -> None:
        self.duration.set(seconds)
        self.finished.set(now.timestamp())

    async def measure_cycle_end(self, reader: EventLog, now: datetime, bound: float) -> None:
        """Read what only a cycle changes: the unsettled commands by kind, the opt-out age.

        Both cost what is in flight and what the cycle changed, not the size of the log: the
        commands through the open-commands index, the opt-out age by re-auditing only the emails
        that moved (``UnpropagatedWatch``; the first measurement audits every opt-out).
        """
        rows = await reader.connection.execute_fetchall(
            "SELECT target, kind, status, COUNT(*) FROM p_commands "
            f"WHERE {UNSETTLED} GROUP BY target, kind, status"
        )
        self._scrape.commands = {(str(r[0]), str(r[1]), str(r[2])): int(r[3]) for r in rows}
        age = await self._optouts.oldest(reader, now)
        # The age grows with the clock until the next cycle changes it.
        self._scrape.optout_age = (age, time.monotonic())
        self._scrape.optout_bound = bound

    async def render(
        self, reader: EventLog | None, *, max_age: float = _MIN_REFRESH_SECONDS
    ) -> bytes:
        """The Prometheus text exposition, with a log snapshot at most ``max_age`` s old."""
        if reader is not None and time.monotonic() - self._refreshed >= max_age:
            self._scrape.snapshot = await read_snapshot(reader, datetime.now(UTC))
            self._refreshed = time.monotonic()
        out: bytes = generate_latest(self.registry)
        return out


def _split(name: str) -> tuple[str, str]:
    store, _, kind = name.partition(".")
    return store, kind or "all"
