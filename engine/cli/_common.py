"""Helpers shared by the command modules: the --config option and output formatting."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from engine.logging import configure_logging
from engine.settings import Settings, load_settings

__all__ = ["add_config_arg", "settings_from_args", "table"]

DEFAULT_CONFIG = "ccsync.toml"


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        help=f"the config file (default $CCSYNC_CONFIG or ./{DEFAULT_CONFIG})",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    configure_logging()
    path = args.config or Path(os.environ.get("CCSYNC_CONFIG") or DEFAULT_CONFIG)
    return load_settings(path)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)
