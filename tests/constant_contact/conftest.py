"""Fixtures: a simulator on loopback and an adapter talking to it, every request recorded.

Each request the adapter sends goes through ``Recorder`` (the transport seam) and is checked
against Constant Contact's swagger file when the test ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest_asyncio

from adapters.constant_contact import CtctAdapter, CtctConfig, RateBudget, TokenStore, open_ctct
from adapters.constant_contact.tokens import StoredTokens
from adapters.constant_contact.transport import Request, Response, Transport
from adapters.ctct_simulator import FaultConfig, Simulator, SimulatorConfig, run_simulator
from tests.simulator.swagger import SwaggerSpec


class Recorder:
    """A transport wrapper keeping every request (method, url, body) it forwards."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[Request] = []

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        return await self.inner.send(request)

    def api(self) -> list[Request]:
        return [r for r in self.sent if "/v3/" in r.url]

    def paths(self, method: str = "") -> list[str]:
        return [
            r.url.split("/v3", 1)[1].split("?", 1)[0]
            for r in self.api()
            if not method or r.method == method
        ]


# Constant Contact's published swagger (3.0.172) gives ListActivityRemoveContacts
# ``maxItems: 0`` on source.contact_ids and list_ids, which would forbid every use of the
# endpoint; the docs give it the same shape as add_list_memberships (<=500 ids, <=50 lists).
# Only that defect is waived, only on that endpoint.
_SPEC_DEFECTS: Final = {("POST", "/activities/remove_list_memberships"): "is expected to be empty"}


def check_against_swagger(requests: list[Request]) -> None:
    """Every API request must be one the swagger file describes (params, body schema)."""
    spec = SwaggerSpec.load()
    problems: list[str] = []
    for r in requests:
        if "/v3/" not in r.url:
            continue
        body = json.loads(r.body) if r.body else None
        waived = _SPEC_DEFECTS.get((r.method, r.url.split("/v3", 1)[1].split("?")[0]))
        errors = [
            e for e in spec.request_errors(r.method, r.url, body) if not waived or waived not in e
        ]
        problems.extend(f"{r.method} {r.url}: {e}" for e in errors)
    assert not problems, "requests outside the swagger spec:\n" + "\n".join(problems[:20])


@dataclass
class Env:
    """A simulator, a config pointing at it, and a way to open recorded adapters."""

    sim: Simulator
    cfg: CtctConfig
    token_file: Path
    recorders: list[Recorder] = field(default_factory=list)

    async def open(
        self, budget: RateBudget | None = None, cfg: CtctConfig | None = None
    ) -> CtctAdapter:
        def wrap(t: Transport) -> Transport:
            rec = Recorder(t)
            self.recorders.append(rec)
            return rec

        cfg = cfg or self.cfg
        return await open_ctct(
            cfg,
            budget or RateBudget(cfg.requests_per_second, cfg.daily_budget),
            wrap_transport=wrap,
        )

    @property
    def recorder(self) -> Recorder:
        return self.recorders[-1]

    def all_requests(self) -> list[Request]:
        return [r for rec in self.recorders for r in rec.sent]


def make_cfg(sim: Simulator, token_file: Path, **over: Any) -> CtctConfig:
    doc: dict[str, Any] = {
        **sim.ctct_settings(),
        "token_file": str(token_file),
        "requests_per_second": 1000,  # the simulator's own limits are what tests exercise
        "backoff_base": 0,  # retries without waiting: no sleeps in tests
        "activity_poll_interval": 0,
        "tracking_reserve": 0,
        **over,
    }
    return CtctConfig.from_toml(doc, env={"CCSYNC_CTCT_CLIENT_SECRET": sim.client_secret})


def seed_tokens(sim: Simulator, path: Path) -> StoredTokens:
    t = sim.issue_tokens()
    tokens = StoredTokens(access_token=t.access_token, refresh_token=t.refresh_token)
    TokenStore(path).save(tokens)
    return tokens


@pytest_asyncio.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``env = await make_env(contacts=..., faults=..., **cfg_overrides)``."""
    stack: list[Any] = []
    envs: list[Env] = []

    async def factory(
        contacts: int = 120,
        *,
        faults: FaultConfig | None = None,
        rate_limits: bool = False,
        sim_kw: dict[str, Any] | None = None,
        **cfg_over: Any,
    ) -> Env:
        config = SimulatorConfig(
            contacts=contacts,
            seed=7,
            rate_limits=rate_limits,
            faults=faults or FaultConfig(),
            **(sim_kw or {}),
        )
        cm = run_simulator(config)
        sim = await cm.__aenter__()
        stack.append(cm)
        token_file = tmp_path / f"tokens{len(stack)}.json"
        seed_tokens(sim, token_file)
        env = Env(sim=sim, cfg=make_cfg(sim, token_file, **cfg_over), token_file=token_file)
        envs.append(env)
        return env

    yield factory
    for env in envs:
        check_against_swagger(env.all_requests())
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
