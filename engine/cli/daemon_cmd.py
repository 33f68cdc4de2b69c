"""``ccsync daemon``: continuous sync cycles with /healthz and /metrics on a local port."""

from __future__ import annotations

import argparse

from engine.bootstrap import wire
from engine.cli._common import add_config_arg, settings_from_args
from engine.daemon import Daemon

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "daemon",
        help="run sync cycles on the configured interval; stop cleanly on SIGTERM",
        description="Run a sync cycle every [sync] interval_seconds (± jitter_seconds) and "
        "serve /healthz and /metrics on [daemon] metrics_host:metrics_port. SIGTERM or "
        "SIGINT finish the page in hand and exit 0. Exit 2 when a person must act "
        "(authorisation revoked, broken config or log).",
    )
    add_config_arg(d)
    d.add_argument(
        "--once",
        action="store_true",
        help="run one cycle and exit (0 if it ended ok or was stopped, 1 otherwise)",
    )
    d.set_defaults(handler=_daemon)


async def _daemon(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    return await Daemon(settings, lambda: wire(settings), once=args.once).run()
