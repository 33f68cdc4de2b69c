"""The simulator's configuration: what account to seed and which faults to inject."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["FaultConfig", "SimulatorConfig"]


class FaultConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Faults injected into /v3 answers. Every fraction is a probability per request.

    Faults are drawn from a random stream seeded by ``seed``, so a test that sends the same
    requests in the same order sees the same faults.
    """

    error_rate: float = 0.0  # fraction answered 500 or 503 (half each)
    latency_ms: float = 0.0  # added to every answer
    reset_rate: float = 0.0  # fraction whose connection is cut mid-body
    truncate_rate: float = 0.0  # fraction whose JSON body is cut short (status 200)
    repeat_rate: float = 0.0  # fraction of contact pages whose next page repeats the last item
    skew_seconds: float = 0.0  # writes stamp updated_at this many seconds in the past
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        for name in ("error_rate", "reset_rate", "truncate_rate", "repeat_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"faults.{name}: {value} is not a fraction in [0, 1]")
        if self.latency_ms < 0:
            raise ValueError(f"faults.latency_ms: {self.latency_ms} is negative")

    @property
    def any_active(self) -> bool:
        """Whether any per-request fault may fire."""
        return bool(self.error_rate or self.latency_ms or self.reset_rate or self.truncate_rate)


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated Constant Contact account and the application key that reaches it."""

    contacts: int = 1000
    seed: int = 0
    lists: int = 8
    campaigns: int = 3
    rate_limits: bool = False  # 4 requests/s and the daily quota per client_id
    per_second: int = 4
    daily_quota: int = 10_000
    token_per_second: int = 1  # the token endpoint's own limit (applies with rate_limits)
    faults: FaultConfig = FaultConfig()
    confirmed_opt_in: bool = False  # sign_up_form: new contacts pending_confirmation if True
    auto_process: bool = True  # run queued bulk activities in the background
    activity_chunk: int = 10_000  # items one processing step (or one poll) advances
    campaign_audience: int = 2000  # at most this many sends per seeded campaign
    prerender: bool = True  # encode every contact's default JSON at start (fast first scan)
    start: datetime | None = None  # the simulator clock's start (default: now)
    frozen_clock: bool = False  # if True the clock moves only by advance()
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        if self.contacts < 0:
            raise ValueError(f"contacts: {self.contacts} is negative")
        if not 0 <= self.lists <= 1000:
            raise ValueError(f"lists: {self.lists} is not in 0..1000")
        if self.campaigns < 0:
            raise ValueError(f"campaigns: {self.campaigns} is negative")
        if self.per_second < 1 or self.daily_quota < 1:
            raise ValueError("per_second and daily_quota must be at least 1")
        if self.activity_chunk < 1:
            raise ValueError(f"activity_chunk: {self.activity_chunk} must be at least 1")
        self.faults.validate()
