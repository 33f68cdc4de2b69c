"""``ccsync simulator serve``: run the Constant Contact v3 simulator in the foreground.

On start it prints the base URL, token URL, the test client's id and secret, and a valid
access token with its refresh token, so curl or ccsync can talk to it at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from engine.errors import ConfigError

__all__ = ["parse_faults", "register"]

_FAULT_KEYS = (
    "error_rate",
    "latency_ms",
    "reset_rate",
    "truncate_rate",
    "repeat_rate",
    "skew_seconds",
    "seed",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulator", help="run the bundled Constant Contact v3 simulator")
    simsub = p.add_subparsers(dest="simulator_command", metavar="ACTION", required=True)
    s = simsub.add_parser("serve", help="serve a seeded simulated account on 127.0.0.1")
    s.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0: any free port)"
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--contacts", type=int, default=10_000, help="contacts to seed")
    s.add_argument("--seed", type=int, default=0, help="seed of the account and its changes")
    s.add_argument("--lists", type=int, default=8, help="contact lists to seed")
    s.add_argument("--campaigns", type=int, default=3, help="sent campaigns to seed")
    s.add_argument(
        "--faults",
        default="",
        help="comma-separated key=value, keys: " + ", ".join(_FAULT_KEYS),
    )
    s.add_argument("--rate-limits", action="store_true", help="enforce 4 req/s and the quota")
    s.add_argument("--daily-quota", type=int, default=10_000, help="requests per UTC day")
    s.add_argument(
        "--no-prerender",
        action="store_true",
        help="start faster; render each contact's JSON on first request instead",
    )
    s.add_argument("--tick", type=float, default=0.0, help="step the living world every N s")
    s.set_defaults(handler=_serve)


def parse_faults(text: str) -> dict[str, float]:
    """``error_rate=0.1,latency_ms=20`` -> dict; ConfigError naming the bad item."""
    out: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in _FAULT_KEYS:
            raise ConfigError("--faults", f"{item!r}: expected key=value with key in {_FAULT_KEYS}")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError("--faults", f"{key}: {value!r} is not a number") from None
    return out


async def _serve(args: argparse.Namespace) -> int:
    # Imported here: the CLI must not load the simulator for other commands.
    from adapters.ctct_simulator import FaultConfig, Simulator, SimulatorConfig

    fault_values = parse_faults(args.faults)
    seed = int(fault_values.pop("seed", args.seed))
    try:
        config = SimulatorConfig(
            contacts=args.contacts,
            seed=args.seed,
            lists=args.lists,
            campaigns=args.campaigns,
            rate_limits=args.rate_limits,
            daily_quota=args.daily_quota,
            faults=FaultConfig(seed=seed, **fault_values),
            host=args.host,
            port=args.port,
            prerender=not args.no_prerender,
        )
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ConfigError("simulator", str(exc)) from exc
    sim = Simulator(config)
    try:
        await sim.start()
    except OSError as exc:
        raise ConfigError("--port", f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    tokens = sim.issue_tokens()
    print(f"base_url:      {sim.base_url}")
    print(f"token_url:     {sim.token_url}")
    print(f"authorize_url: {sim.authorize_url}")
    print(f"admin_url:     {sim.admin_url}")
    print(f"client_id:     {sim.client_id}")
    print(f"client_secret: {sim.client_secret}")
    print(f"redirect_uri:  {sim.redirect_uri}")
    print(f"access_token:  {tokens.access_token}")
    print(f"refresh_token: {tokens.refresh_token}")
    print(f"contacts:      {config.contacts} (seed {config.seed})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if args.tick > 0:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=args.tick)
                if not stop.is_set():
                    sim.world.step(1)
        else:
            await stop.wait()
    finally:
        await sim.close()
    print("simulator stopped", file=sys.stderr)
    return 0
