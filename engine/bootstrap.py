"""The composition root: the one place that wires real adapters into the engine.

Tests wire fakes into ``SyncEngine`` directly; the CLI and the daemon come through here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import msgspec
import structlog

from adapters.appdb import AppDatabase, AppDbConfig, open_appdb
from adapters.constant_contact import CtctAdapter, CtctConfig, open_ctct
from engine.cycle import SyncEngine
from engine.log import EventLog
from engine.ports import Clock, utc_now
from engine.settings import Settings

__all__ = ["Wired", "wire"]

_log = structlog.get_logger("ccsync.bootstrap")


class Wired(msgspec.Struct, kw_only=True):
    """Everything a command needs, open and connected."""

    settings: Settings
    log: EventLog
    ctct: CtctAdapter
    app: AppDatabase
    engine: SyncEngine


def ctct_config(settings: Settings) -> CtctConfig:
    doc = dict(settings.ctct)
    token_file = doc.get("token_file")
    if isinstance(token_file, str) and not Path(token_file).expanduser().is_absolute():
        doc["token_file"] = str(settings.path.parent / token_file)
    return CtctConfig.from_toml(doc)


@asynccontextmanager
async def wire(settings: Settings, *, clock: Clock = utc_now) -> AsyncIterator[Wired]:
    """Open the log (as its single writer), both adapters, and the engine over them.

    ``clock`` is the sync's time (a simulated one in benchmarks): the log's record times, the
    cycles' bounds and the app adapter's stamps."""
    ctct_cfg = ctct_config(settings)
    app_cfg = AppDbConfig.from_toml(settings.appdb)
    async with AsyncExitStack() as stack:
        log = await EventLog.open(
            settings.log_path,
            durability=settings.durability,  # type: ignore[arg-type]
            clock=clock,
        )
        stack.push_async_callback(log.close)
        app = await open_appdb(app_cfg, clock=clock)
        stack.push_async_callback(app.close)
        ctct = await open_ctct(ctct_cfg)
        stack.push_async_callback(ctct.close)
        policy = settings.policy
        mapped = set(app_cfg.contacts.fields)
        dropped = [f for f in policy.fields if f not in mapped]
        if dropped:
            # A field the app does not map can never agree: syncing it would re-send it forever.
            _log.warning("bootstrap.fields_not_mapped", fields=dropped)
            policy = msgspec.structs.replace(
                policy, fields=tuple(f for f in policy.fields if f in mapped)
            )
        engine = SyncEngine(
            log,
            ctct,
            app,
            policy,
            tracking=ctct if settings.tracking and ctct_cfg.tracking else None,
            requests_made=lambda: ctct.requests_made,
            ctct_import_list=ctct_cfg.import_list_id,
            clock=clock,
        )
        yield Wired(settings=settings, log=log, ctct=ctct, app=app, engine=engine)
