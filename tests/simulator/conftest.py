"""Fixtures of the simulator suite: the swagger spec (parsed once), a running simulator and
a client that validates every request and answer against the spec."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from adapters.ctct_simulator import Simulator, SimulatorConfig, run_simulator
from tests.simulator.client import SpecClient
from tests.simulator.swagger import SwaggerSpec


@pytest.fixture(scope="session")
def spec() -> SwaggerSpec:
    """Constant Contact's swagger file, parsed once per session."""
    return SwaggerSpec.load()


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A small seeded account, rate limits off."""
    async with run_simulator(SimulatorConfig(contacts=300, seed=7, lists=4, campaigns=2)) as s:
        yield s
        # Whatever the test did, no contact may be served from JSON cached before a change.
        stale = [c.contact_id for c in s.account.contacts if not c.cache_is_current()]
        assert not stale, f"contacts changed without touch(): {stale[:5]}"


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session that does not follow redirects."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest_asyncio.fixture
async def api(sim: Simulator, spec: SwaggerSpec, session: aiohttp.ClientSession) -> SpecClient:
    """A spec-checking client holding a valid token for ``sim``."""
    return SpecClient(session, sim.root_url, spec, sim.issue_tokens().access_token)
