"""Fixtures for the app database adapter: the contract suite runs on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from tests.appdb.harness import Harness, close_harness, fake_harness, pg_available, sql_harness

BACKENDS = [
    "fake",
    "sqlite-triggers",
    "sqlite-column",
    pytest.param("postgres-triggers", marks=pytest.mark.postgres),
    pytest.param("postgres-column", marks=pytest.mark.postgres),
]

Factory = Callable[..., Awaitable[Harness]]


@pytest_asyncio.fixture(params=BACKENDS)
async def make_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """A factory of harnesses on this backend (keyword arguments override the config)."""
    name: str = request.param
    made: list[tuple[Harness, str | None]] = []

    async def make(**overrides: object) -> Harness:
        if name == "fake":
            h = fake_harness(str(overrides.get("delete_mode", "soft")))
            made.append((h, None))
            return h
        backend, mode = name.split("-")
        if backend == "postgres" and not await pg_available():
            pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
        sub = tmp_path / f"db{len(made)}"
        sub.mkdir()
        h, schema = await sql_harness(backend, sub, mode == "triggers", **overrides)
        made.append((h, schema))
        return h

    try:
        yield make
    finally:
        for h, schema in made:
            await close_harness(h, schema)


@pytest_asyncio.fixture
async def harness(make_harness: Factory) -> Harness:
    """The backend with the sample CRM, default mapping."""
    return await make_harness()
