"""Settings: one frozen object, read once from a TOML file (and the environment for secrets).

The engine's own sections are validated here; the ``[ctct]`` and ``[appdb]`` tables are handed
to their adapters' own ``from_toml`` at bootstrap, which validate them the same way. Every
problem is a ConfigError naming the dotted key, which the CLI prints as one line.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from engine.errors import ConfigError
from engine.policy import Policy, policy_from_toml

__all__ = ["Settings", "load_settings"]

_SECTIONS = frozenset(("log", "sync", "daemon", "ctct", "appdb", "policy", "lists", "simulator"))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ccsync reads from its config file, validated."""

    path: Path  # the config file itself; relative paths in it are relative to its folder
    log_path: Path
    durability: str = "normal"
    interval_seconds: float = 900.0
    jitter_seconds: float = 60.0
    tracking: bool = True
    # An opt-out is seen by the next cycle, carried in it, and confirmed by the one after: two
    # intervals, each up to its jitter longer, and 15 minutes for the cycles' own time.
    opt_out_bound_seconds: float = 2 * (900.0 + 60.0) + 900.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    policy: Policy = Policy()
    ctct: dict[str, Any] = {}
    appdb: dict[str, Any] = {}
    simulator: dict[str, Any] = {}


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table")
    return value


def _num(table: dict[str, Any], section: str, key: str, default: float, lo: float = 0) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{section}.{key}", f"must be a number, not {value!r}")
    if value < lo:
        raise ConfigError(f"{section}.{key}", f"must be at least {lo}, not {value}")
    return float(value)


def _known(table: dict[str, Any], section: str, keys: set[str]) -> None:
    for k in table:
        if k not in keys:
            raise ConfigError(f"{section}.{k}", "unknown option")


def load_settings(path: str | Path) -> Settings:
    """Read and validate the config file at ``path``."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(str(p), "no such config file (create one with `ccsync init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"not valid TOML: {exc}") from None
    return settings_from_doc(doc, p)


def settings_from_doc(doc: dict[str, Any], path: Path) -> Settings:
    for k in doc:
        if k not in _SECTIONS:
            raise ConfigError(k, "unknown section")
    base = path.parent
    log = _table(doc, "log")
    _known(log, "log", {"path", "durability"})
    log_path = log.get("path", "ccsync.db")
    if not isinstance(log_path, str) or not log_path:
        raise ConfigError("log.path", "must be a file path")
    durability = log.get("durability", "normal")
    if durability not in ("normal", "full"):
        raise ConfigError("log.durability", f"must be normal or full, not {durability!r}")
    sync = _table(doc, "sync")
    _known(
        sync, "sync", {"interval_seconds", "jitter_seconds", "tracking", "opt_out_bound_seconds"}
    )
    interval = _num(sync, "sync", "interval_seconds", 900, lo=1)
    jitter = _num(sync, "sync", "jitter_seconds", 60)
    tracking = sync.get("tracking", True)
    if not isinstance(tracking, bool):
        raise ConfigError("sync.tracking", "must be true or false")
    daemon = _table(doc, "daemon")
    _known(daemon, "daemon", {"metrics_host", "metrics_port"})
    port = daemon.get("metrics_port", 9464)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("daemon.metrics_port", f"must be a port number, not {port!r}")
    lists = doc.get("lists", [])
    if not isinstance(lists, list):
        raise ConfigError("lists", "must be an array of tables ([[lists]])")
    return Settings(
        path=path,
        log_path=(base / Path(log_path).expanduser()),
        durability=durability,
        interval_seconds=interval,
        jitter_seconds=jitter,
        tracking=tracking,
        opt_out_bound_seconds=_num(
            sync, "sync", "opt_out_bound_seconds", 2 * (interval + jitter) + 900
        ),
        metrics_host=str(daemon.get("metrics_host", "127.0.0.1")),
        metrics_port=port,
        policy=policy_from_toml(_table(doc, "policy"), lists),
        ctct=_table(doc, "ctct"),
        appdb=_resolve_appdb(_table(doc, "appdb"), base),
        simulator=_table(doc, "simulator"),
    )


def _resolve_appdb(appdb: dict[str, Any], base: Path) -> dict[str, Any]:
    # A relative SQLite path is relative to the config file, like every other path in it.
    if appdb.get("backend", "sqlite") == "sqlite" and isinstance(appdb.get("dsn"), str):
        dsn = Path(appdb["dsn"]).expanduser()
        return {**appdb, "dsn": str(dsn if dsn.is_absolute() else base / dsn)}
    return appdb
