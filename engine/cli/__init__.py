"""The ``ccsync`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; a command's
handler is an ``async def`` taking the parsed arguments and returning an exit code. Expected
failures (the CcsyncError tree) become one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence
from typing import Final

from engine.errors import CcsyncError, FatalError

__all__ = ["main"]

# Command groups, in the order `ccsync --help` lists them.
_COMMAND_MODULES: Final = (
    "engine.cli.init_cmd",
    "engine.cli.demo_cmd",
    "engine.cli.sync_cmd",
    "engine.cli.audit_cmd",
    "engine.cli.log_cmd",
    "engine.cli.appdb_cmd",
    "engine.cli.simulator_cmd",
    "engine.cli.auth_cmd",
    "engine.cli.daemon_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccsync",
        description="Keep an application's contacts in sync with Constant Contact, provably.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ccsync`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        print("ccsync: interrupted", file=sys.stderr)
        return 130
    except FatalError as exc:
        print(f"ccsync: error: {exc}", file=sys.stderr)
        return 2
    except CcsyncError as exc:
        print(f"ccsync: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
