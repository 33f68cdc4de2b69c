"""Running a simulator: ``run_simulator`` for async code, ``Simulator.start_in_thread`` for
synchronous code (benchmarks and the demo run their engine in another event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.app import build_app
from adapters.ctct_simulator.auth import Tokens
from adapters.ctct_simulator.clock import SimClock
from adapters.ctct_simulator.config import FaultConfig, SimulatorConfig
from adapters.ctct_simulator.journal import RecordedRequest
from adapters.ctct_simulator.state import SimState
from adapters.ctct_simulator.tracking import Tracking
from adapters.ctct_simulator.world import World

__all__ = ["Simulator", "run_simulator"]

_T = TypeVar("_T")
_log = structlog.get_logger("ccsync.simulator")


class Simulator:
    """A running simulator: its URLs, test client, clock, account and controls."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.state = SimState(config)
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # what clients need ---------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API root, ``http://127.0.0.1:PORT/v3`` (``_links`` hrefs are ``/v3/...``)."""
        return f"{self.root_url}/v3"

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint."""
        return f"{self.root_url}/oauth2/default/v1/token"

    @property
    def authorize_url(self) -> str:
        """The OAuth2 authorization endpoint (approves at once and redirects)."""
        return f"{self.root_url}/oauth2/default/v1/authorize"

    @property
    def device_authorize_url(self) -> str:
        """The device-flow authorization endpoint."""
        return f"{self.root_url}/oauth2/default/v1/device/authorize"

    @property
    def admin_url(self) -> str:
        """The admin API root."""
        return f"{self.root_url}/__admin"

    @property
    def client_id(self) -> str:
        """The registered test client's id (the API key rate limits count against)."""
        return self.state.auth.client_id

    @property
    def client_secret(self) -> str:
        """The registered test client's secret."""
        return self.state.auth.client_secret

    @property
    def redirect_uri(self) -> str:
        """The registered test client's redirect URI."""
        return self.state.auth.redirect_uri

    def ctct_settings(self) -> dict[str, str]:
        """The ``[ctct]`` keys that point ccsync's adapter at this simulator and its client."""
        return {
            "client_id": self.client_id,
            "base_url": self.base_url,
            "token_url": self.token_url,
            "authorize_url": self.authorize_url,
            "device_authorize_url": self.device_authorize_url,
            "redirect_uri": self.redirect_uri,
        }

    @property
    def clock(self) -> SimClock:
        """The simulator's clock (tokens, timestamps, rate windows, the quota day)."""
        return self.state.clock

    @property
    def account(self) -> Account:
        """The in-memory account, for scripted changes and assertions."""
        return self.state.account

    @property
    def tracking(self) -> Tracking:
        """Campaigns and tracking records."""
        return self.state.tracking

    @property
    def world(self) -> World:
        """The living account: ``world.step(n)``."""
        return self.state.world

    @property
    def requests(self) -> Counter[str]:
        """Requests per endpoint (``"GET /v3/contacts"``); ``.clear()`` resets."""
        return self.state.requests

    def reset_requests(self) -> None:
        """Forget the request counts (and the journal's entries, if it is on)."""
        self.state.requests.clear()
        if self.state.journal is not None:
            self.state.journal.clear()

    def start_journal(self) -> None:
        """Record every request from now on, with its query and body (off by default: the
        bodies of big imports would cost memory); ``journal`` lists them."""
        self.state.journal = []

    @property
    def journal(self) -> list[RecordedRequest]:
        """The requests received since ``start_journal`` (or the last ``reset_requests``),
        oldest first; empty while the journal is off."""
        return self.state.journal if self.state.journal is not None else []

    def issue_tokens(self, scope: str | None = None) -> Tokens:
        """A valid access token with a refresh token, without the OAuth dance."""
        return self.state.auth.issue(scope) if scope else self.state.auth.issue()

    def set_faults(self, faults: FaultConfig) -> None:
        """Change the injected faults (their random stream restarts from their seed)."""
        self.state.set_faults(faults)

    def set_rate_limits(self, enabled: bool) -> None:
        """Switch the per-key limits on or off."""
        self.state.rate_limits = enabled

    def quota(self) -> dict[str, Any]:
        """Today's quota use of the test client's key."""
        return self.state.quota()

    async def drain_activities(self) -> int:
        """Finish every queued bulk activity now; returns how many."""
        return self.state.activities.drain()

    # lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind (127.0.0.1, a free port unless configured) and start serving."""
        self.state.work_ready = asyncio.Event()
        self._runner = web.AppRunner(build_app(self.state), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._worker = asyncio.create_task(self._work())
        _log.info("simulator.started", url=self.base_url, contacts=self.config.contacts)

    async def _work(self) -> None:
        """Process queued bulk activities a chunk at a time, yielding between chunks."""
        event = self.state.work_ready
        assert event is not None
        queue = self.state.activities
        while True:
            await event.wait()
            event.clear()
            while pending := queue.pending():
                for act in pending:
                    queue.step(act)
                    await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop serving."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        _log.info("simulator.stopped")

    @classmethod
    def start_in_thread(cls, config: SimulatorConfig) -> Simulator:
        """Start a simulator on its own event loop in a daemon thread; ``.stop()`` ends it.

        Direct calls on ``account``/``world`` from the caller's thread race with the server:
        wrap them in ``call(lambda: ...)``, which runs them on the simulator's loop.
        """
        sim = cls(config)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(sim.start())
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(sim.close())
            loop.close()

        sim._loop = loop
        sim._thread = threading.Thread(target=run, name="ccsync-simulator", daemon=True)
        sim._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return sim

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the simulator's event loop (thread mode) and return its result."""
        if self._loop is None or self._thread is None:
            return fn()

        async def wrapper() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result()

    def stop(self) -> None:
        """Stop a simulator started with ``start_in_thread`` and join its thread."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("stop() is for start_in_thread; use `async with run_simulator()`")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None


@contextlib.asynccontextmanager
async def run_simulator(config: SimulatorConfig | None = None) -> AsyncIterator[Simulator]:
    """Serve a simulator on 127.0.0.1 for the duration of the block."""
    sim = Simulator(config or SimulatorConfig())
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()
