"""The daemon's small HTTP server: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.errors import ConfigError

__all__ = ["Health", "HttpServer", "start_http"]


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """What ``/healthz`` answers. ``status``: ok, stopping or failing (the last cycle raised)."""

    status: str
    cycles: int
    in_cycle: bool
    run_id: str | None = None
    outcome: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    error: str | None = None
    next_cycle_at: datetime | None = None

    @property
    def http_status(self) -> int:
        return 503 if self.outcome == "failed" else 200


class HttpServer(msgspec.Struct, kw_only=True):
    """A running server: where it listens, and how to stop it."""

    host: str
    port: int
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_http(
    host: str,
    port: int,
    health: Callable[[], Health],
    metrics: Callable[[], Awaitable[bytes]],
) -> HttpServer:
    """Listen on ``host:port`` (0: any free port). Raises ConfigError if it cannot bind."""

    async def healthz(_request: web.Request) -> web.Response:
        h = health()
        return web.Response(
            body=msgspec.json.encode(h), status=h.http_status, content_type="application/json"
        )

    async def metrics_page(_request: web.Request) -> web.Response:
        resp = web.Response(body=await metrics())
        # CONTENT_TYPE_LATEST carries a charset parameter, which content_type= refuses.
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            "daemon.metrics_port", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    bound = runner.addresses[0][1] if runner.addresses else port
    return HttpServer(host=host, port=int(bound), runner=runner)
