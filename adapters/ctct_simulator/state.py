"""Everything one running simulator holds, shared by its HTTP handlers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from aiohttp import web

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.activities import ActivityQueue
from adapters.ctct_simulator.auth import AuthServer
from adapters.ctct_simulator.clock import SimClock
from adapters.ctct_simulator.config import FaultConfig, SimulatorConfig
from adapters.ctct_simulator.faults import FaultInjector
from adapters.ctct_simulator.journal import RecordedRequest
from adapters.ctct_simulator.limits import RateLimiter
from adapters.ctct_simulator.seed import seed_account
from adapters.ctct_simulator.tracking import Tracking
from adapters.ctct_simulator.world import World

__all__ = ["REDIRECT_URI", "STATE", "SimState", "json_response"]

REDIRECT_URI = "http://127.0.0.1/callback"
_encode = msgspec.json.Encoder().encode


class SimState:
    """The account, its bulk jobs and tracking, auth, limits, faults and request counts."""

    def __init__(self, config: SimulatorConfig) -> None:
        config.validate()
        self.config = config
        self.clock = SimClock(config.start, frozen=config.frozen_clock)
        self.account = Account(self.clock, config.seed)
        seed_account(self.account, config.contacts, config.lists, config.seed)
        self.activities = ActivityQueue(self.account, config.activity_chunk)
        self.tracking = Tracking(self.account, config.seed)
        self.tracking.seed_campaigns(config.campaigns, config.campaign_audience)
        self.world = World(self.account, self.tracking, config.seed)
        if config.prerender:
            self.prerender()
        self.auth = AuthServer(self.clock, config.seed, REDIRECT_URI)
        self.limiter = RateLimiter(config.per_second, config.daily_quota)
        self.token_limiter = RateLimiter(config.token_per_second, 10**12)
        self.rate_limits = config.rate_limits
        self.faults = FaultInjector(config.faults)
        self.account.skew_ms = int(config.faults.skew_seconds * 1000)
        self.requests: Counter[str] = Counter()
        self.journal: list[RecordedRequest] | None = None  # every request, once switched on
        self.work_ready: Any = None  # an asyncio.Event, set by the server when it starts

    def prerender(self) -> None:
        """Encode every contact's default (no include) JSON now, so even the first scan of
        the account is a join of cached bytes rather than a render per contact."""
        for c in self.account.contacts:
            c.encoded(0)

    def reseed(self, *, contacts: int, seed: int, lists: int, campaigns: int) -> None:
        """Replace the account with a freshly seeded one; client, tokens and clock stay."""
        config = msgspec.structs.replace(
            self.config, contacts=contacts, seed=seed, lists=lists, campaigns=campaigns
        )
        config.validate()
        self.config = config
        self.account = Account(self.clock, seed)
        seed_account(self.account, contacts, lists, seed)
        self.account.skew_ms = int(self.faults.config.skew_seconds * 1000)
        self.activities = ActivityQueue(self.account, config.activity_chunk)
        self.tracking = Tracking(self.account, seed)
        self.tracking.seed_campaigns(campaigns, config.campaign_audience)
        self.world = World(self.account, self.tracking, seed)
        if config.prerender:
            self.prerender()

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault settings (and restart their seeded stream)."""
        faults.validate()
        self.faults = FaultInjector(faults)
        self.account.skew_ms = int(faults.skew_seconds * 1000)

    def quota(self) -> dict[str, Any]:
        """Today's quota use of the test client's key."""
        return self.limiter.usage(self.auth.client_id, self.clock.now_ms())


STATE = web.AppKey("ccsync_sim_state", SimState)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer encoded with msgspec."""
    return web.Response(
        body=_encode(data), status=status, content_type="application/json", headers=headers
    )
