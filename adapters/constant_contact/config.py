"""Settings of the Constant Contact adapter, read once from the ``[ctct]`` TOML table.

Secrets never come from the TOML file: the client secret and any bootstrap tokens are read from
the environment (``CCSYNC_CTCT_CLIENT_SECRET``, ``CCSYNC_CTCT_ACCESS_TOKEN``,
``CCSYNC_CTCT_REFRESH_TOKEN``) or, for tokens, from the token file (mode 0600). Every bad value
becomes a ``ConfigError`` naming the key, e.g. ``ctct.requests_per_second``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import msgspec

from engine.errors import ConfigError

__all__ = ["SECRET_ENV", "CtctConfig", "Secret"]

DEFAULT_BASE_URL: Final = "https://api.cc.email/v3"
_AUTHZ: Final = "https://authz.constantcontact.com/oauth2/default/v1"
SECRET_ENV: Final = {
    "client_secret": "CCSYNC_CTCT_CLIENT_SECRET",
    "access_token": "CCSYNC_CTCT_ACCESS_TOKEN",
    "refresh_token": "CCSYNC_CTCT_REFRESH_TOKEN",
}
_SECRET_KEYS: Final = frozenset(SECRET_ENV)
_T = TypeVar("_T")


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class CtctConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the adapter needs to know, validated. Build it with ``from_toml``."""

    client_id: str
    base_url: str = DEFAULT_BASE_URL
    token_url: str = f"{_AUTHZ}/token"
    authorize_url: str = f"{_AUTHZ}/authorize"
    device_authorize_url: str = f"{_AUTHZ}/device/authorize"
    redirect_uri: str = "https://localhost/ccsync/callback"
    scopes: tuple[str, ...] = ("contact_data", "campaign_data", "offline_access")
    token_file: Path | None = None
    client_secret: Secret | None = None
    access_token: Secret | None = None  # bootstrap only, from the environment
    refresh_token: Secret | None = None
    # Look-back on incremental fetches: the API's boundary semantics and precision are undocumented.
    overlap: timedelta = timedelta(minutes=5)
    requests_per_second: float = 4.0
    daily_budget: int = 10_000
    # Requests per day kept back for contact sync: tracking stops when fewer than this remain.
    tracking_reserve: int = 2_000
    tracking: bool = True
    tracking_after_days: int = 90  # the campaigns whose tracking is read: updated since then
    # A report whose counts have not moved is read again after this long all the same (0: every
    # report at every run). The counts (Constant Contact's stats) say when there is news; the
    # recheck catches what they do not count (a second forward from one reader, say).
    tracking_recheck: timedelta = timedelta(hours=24)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff_base: float = 0.5  # seconds; 0 disables waiting between retries (tests)
    backoff_max: float = 30.0
    refresh_margin: timedelta = timedelta(minutes=5)  # refresh this long before expiry
    page_size: int = 500
    activity_poll_interval: float = 1.0  # the first wait; doubled after each poll ...
    activity_poll_max: float = 30.0  # ... up to this
    activity_timeout: float = 900.0
    # contacts_json_import requires 1..50 list ids: imports of contacts that join no list name this.
    import_list_id: str | None = None

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any], env: Mapping[str, str] | None = None) -> CtctConfig:
        """Validate the ``[ctct]`` table; secrets come from ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env
        if not isinstance(doc, Mapping):
            raise ConfigError("ctct", "must be a table")
        for key in doc:
            if key in _SECRET_KEYS:
                raise ConfigError(
                    f"ctct.{key}",
                    f"secrets are not read from the config file: set {SECRET_ENV[key]}",
                )
            if key not in _KNOWN:
                raise ConfigError(f"ctct.{key}", "unknown setting")
        r = _Reader(doc)
        client_id = r.get("client_id", str, None)
        if not client_id:
            raise ConfigError("ctct.client_id", "required (the application's API key)")
        token_file = r.get("token_file", str, None)
        secrets = {k: Secret(env[v]) for k, v in SECRET_ENV.items() if env.get(v)}
        cfg = cls(
            client_id=client_id,
            base_url=r.url("base_url", DEFAULT_BASE_URL),
            token_url=r.url("token_url", f"{_AUTHZ}/token"),
            authorize_url=r.url("authorize_url", f"{_AUTHZ}/authorize"),
            device_authorize_url=r.url("device_authorize_url", f"{_AUTHZ}/device/authorize"),
            redirect_uri=r.url("redirect_uri", "https://localhost/ccsync/callback"),
            scopes=tuple(
                r.get("scopes", list, ["contact_data", "campaign_data", "offline_access"])
            ),
            token_file=Path(token_file).expanduser() if token_file else None,
            client_secret=secrets.get("client_secret"),
            access_token=secrets.get("access_token"),
            refresh_token=secrets.get("refresh_token"),
            overlap=timedelta(seconds=r.number("overlap_seconds", 300, lo=0)),
            requests_per_second=r.number("requests_per_second", 4.0, lo=0.01, hi=1000),
            daily_budget=int(r.number("daily_budget", 10_000, lo=1, integer=True)),
            tracking_reserve=int(r.number("tracking_reserve", 2_000, lo=0, integer=True)),
            tracking=r.get("tracking", bool, True),
            tracking_after_days=int(r.number("tracking_after_days", 90, lo=1, integer=True)),
            tracking_recheck=timedelta(
                hours=r.number("tracking_recheck_hours", 24, lo=0, hi=24 * 90)
            ),
            connect_timeout=r.number("connect_timeout", 10.0, lo=0.1),
            read_timeout=r.number("read_timeout", 60.0, lo=0.1),
            retries=int(r.number("retries", 5, lo=0, hi=20, integer=True)),
            backoff_base=r.number("backoff_base", 0.5, lo=0),
            backoff_max=r.number("backoff_max", 30.0, lo=0),
            refresh_margin=timedelta(seconds=r.number("refresh_margin_seconds", 300, lo=0)),
            page_size=int(r.number("page_size", 500, lo=1, hi=500, integer=True)),
            activity_poll_interval=r.number("activity_poll_interval", 1.0, lo=0),
            activity_poll_max=r.number("activity_poll_max", 30.0, lo=0),
            activity_timeout=r.number("activity_timeout", 900.0, lo=1),
            import_list_id=r.get("import_list_id", str, None),
        )
        if cfg.token_file is None and cfg.access_token is None and cfg.refresh_token is None:
            raise ConfigError(
                "ctct.token_file",
                f"no credentials: set a token_file (run `ccsync auth login`) or "
                f"{SECRET_ENV['access_token']}",
            )
        return cfg


_KNOWN: Final = frozenset(
    {
        "client_id",
        "base_url",
        "token_url",
        "authorize_url",
        "device_authorize_url",
        "redirect_uri",
        "scopes",
        "token_file",
        "overlap_seconds",
        "requests_per_second",
        "daily_budget",
        "tracking_reserve",
        "tracking",
        "tracking_after_days",
        "tracking_recheck_hours",
        "connect_timeout",
        "read_timeout",
        "retries",
        "backoff_base",
        "backoff_max",
        "refresh_margin_seconds",
        "page_size",
        "activity_poll_interval",
        "activity_poll_max",
        "activity_timeout",
        "import_list_id",
    }
)


class _Reader:
    """Typed access to one TOML table, with errors naming ``ctct.<key>``."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self._doc = doc

    def get(self, key: str, kind: type[_T], default: _T) -> _T:
        value: Any = self._doc.get(key, default)
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"ctct.{key}", f"must be a {kind.__name__}, not {value!r}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"ctct.{key}", "must be a list of strings")
        return cast(_T, value)

    def url(self, key: str, default: str) -> str:
        value = self.get(key, str, default)
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"ctct.{key}", f"must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    def number(
        self,
        key: str,
        default: float,
        *,
        lo: float | None = None,
        hi: float | None = None,
        integer: bool = False,
    ) -> float:
        raw: object = self._doc.get(key, default)
        if (
            isinstance(raw, bool)
            or not isinstance(raw, int | float)
            or (integer and not isinstance(raw, int))
        ):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"ctct.{key}", f"must be {kind}, not {raw!r}")
        value = float(raw)
        if lo is not None and value < lo:
            raise ConfigError(f"ctct.{key}", f"must be at least {lo}, not {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"ctct.{key}", f"must be at most {hi}, not {value}")
        return value
