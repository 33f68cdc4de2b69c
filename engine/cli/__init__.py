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
import os
import select
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
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # another pipe's: a bug, with its traceback
        return 141  # as a shell reports a writer ended by SIGPIPE
    return code


def _stdout_closed() -> bool:
    """Whether whoever read our output went away (``ccsync log show | head``): the write end
    of a pipe whose reader closed polls as an error. If so, stdout now points at /dev/null:
    Python's own flush at exit would fail again and print a traceback for what is not an
    error."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or no poll() here
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


if __name__ == "__main__":
    sys.exit(main())
