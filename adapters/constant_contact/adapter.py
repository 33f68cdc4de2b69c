"""``CtctAdapter``: the Constant Contact side of a sync, behind the engine's ports.

One adapter per account: one aiohttp ClientSession, one token store, and a rate budget shared
with every other adapter using the same application key (pass the same ``RateBudget``). It
implements ContactSource, ListSource, TrackingSource and CommandSink structurally.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType

import aiohttp

from engine.commands import Command, Outcome
from engine.model import ListRecord, Store
from engine.ports import Page, TrackingPage

from .budget import Budget, BudgetStatus, RateBudget
from .client import CtctClient
from .config import CtctConfig
from .oauth import OAuthClient
from .observe import observe_contacts, observe_lists
from .tokens import TokenStore
from .tracking import observe_tracking
from .transport import AiohttpTransport, Transport
from .writes import CommandWriter

__all__ = ["CtctAdapter", "open_ctct"]


class CtctAdapter:
    """Observe contacts, lists and tracking; apply commands. Close it (or ``async with``)."""

    def __init__(
        self,
        cfg: CtctConfig,
        session: aiohttp.ClientSession | None,
        client: CtctClient,
        oauth: OAuthClient,
        tokens: TokenStore,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._cfg = cfg
        self._session = session
        self._client = client
        self._oauth = oauth
        self.tokens = tokens
        self._writer = CommandWriter(client, cfg, sleep=sleep)

    @property
    def store(self) -> Store:
        return "ctct"

    @property
    def requests_made(self) -> int:
        """API requests sent by this adapter (retries included; token requests excluded)."""
        return self._client.requests_made

    @property
    def client(self) -> CtctClient:
        return self._client

    def budget_status(self) -> BudgetStatus:
        return self._client.budget.status()

    def observe_contacts(self, resume: str | None, bound: datetime) -> AsyncIterator[Page]:
        """Full fetch when ``resume`` is None, else updated/opt-out/deleted sweeps (see paging)."""
        return observe_contacts(self._client, self._cfg, resume, bound)

    async def observe_lists(self) -> tuple[str, Sequence[ListRecord]]:
        return await observe_lists(self._client)

    def observe_tracking(self, resume: str | None, bound: datetime) -> AsyncIterator[TrackingPage]:
        return observe_tracking(self._client, self._cfg, resume, bound)

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        return await self._writer.apply(commands)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> CtctAdapter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def open_ctct(
    cfg: CtctConfig,
    budget: Budget | None = None,
    *,
    tokens: TokenStore | None = None,
    wrap_transport: Callable[[Transport], Transport] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> CtctAdapter:
    """Open an adapter: one ClientSession with the configured timeouts.

    ``budget``: share one across every adapter of the same application key (default: a new
    in-process ``RateBudget`` from the config). ``wrap_transport`` lets tests record requests.
    """
    timeout = aiohttp.ClientTimeout(
        total=None, connect=cfg.connect_timeout, sock_read=cfg.read_timeout
    )
    session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
    transport: Transport = AiohttpTransport(session)
    if wrap_transport is not None:
        transport = wrap_transport(transport)
    budget = budget or RateBudget(cfg.requests_per_second, cfg.daily_budget)
    tokens = tokens or TokenStore.from_config(cfg)
    oauth = OAuthClient(cfg, transport, sleep=sleep)
    client = CtctClient(cfg, transport, budget, tokens, oauth.refresh, sleep=sleep)
    return CtctAdapter(cfg, session, client, oauth, tokens, sleep=sleep)
