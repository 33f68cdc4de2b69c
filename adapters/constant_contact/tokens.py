"""OAuth token storage: a 0600 file (or the environment), refreshed once, persisted atomically.

Constant Contact's rotating refresh tokens are single-use: two processes refreshing with the
same token means one of them (and maybe both) ends up with a dead pair, and a new pair lost
after the exchange means re-authorisation. So a refresh happens under an asyncio lock (tasks of
this process) *and* an exclusive ``flock`` on ``<token_file>.lock`` (other processes); after
taking the locks we re-read the file, because another holder may already have refreshed; and the
new pair reaches the disk (temp file, fsync, rename, fsync dir) before anyone uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import structlog

from engine.errors import AuthorizationError, ConfigError

from .config import CtctConfig

__all__ = ["Refresher", "StoredTokens", "TokenStore", "write_private_file"]

log = structlog.get_logger("ccsync.ctct")

RELOGIN = "re-authorise with `ccsync auth login`"


class StoredTokens(msgspec.Struct, frozen=True, kw_only=True):
    """One access/refresh pair and when the access token expires (None: unknown)."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None

    def __repr__(self) -> str:  # never print a token, even in a traceback
        return f"StoredTokens(expires_at={self.expires_at!r})"

    @classmethod
    def issued(
        cls, access_token: str, refresh_token: str | None, expires_in: float | None, now: datetime
    ) -> StoredTokens:
        expires = now + timedelta(seconds=expires_in) if expires_in else None
        return cls(access_token=access_token, refresh_token=refresh_token, expires_at=expires)


# Given the current refresh token, exchange it at the token endpoint for a new pair.
Refresher = Callable[[str], Awaitable[StoredTokens]]

_decoder = msgspec.json.Decoder(StoredTokens)


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class TokenStore:
    """The current token pair of one account, and the one place that refreshes it."""

    def __init__(
        self,
        path: Path | None,
        *,
        initial: StoredTokens | None = None,
        margin: timedelta = timedelta(minutes=5),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._path = path
        self._initial = initial
        self._margin = margin
        self._now = now
        self._tokens: StoredTokens | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0  # exchanges this store made (tests and metrics)

    @classmethod
    def from_config(cls, cfg: CtctConfig) -> TokenStore:
        initial = None
        if cfg.access_token is not None or cfg.refresh_token is not None:
            initial = StoredTokens(
                access_token=cfg.access_token.reveal() if cfg.access_token else "",
                refresh_token=cfg.refresh_token.reveal() if cfg.refresh_token else None,
            )
        return cls(cfg.token_file, initial=initial, margin=cfg.refresh_margin)

    @property
    def path(self) -> Path | None:
        return self._path

    def _read_file(self) -> StoredTokens | None:
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                "ctct.token_file",
                f"{self._path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                f"run `chmod 600 {self._path}`",
            )
        try:
            return _decoder.decode(self._path.read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise ConfigError("ctct.token_file", f"cannot read {self._path}: {exc}") from exc

    def current(self) -> StoredTokens:
        """The pair in use; loads the file (or the environment's pair) on first use."""
        if self._tokens is None:
            self._tokens = self._read_file() or self._initial
            if self._tokens is None:
                raise AuthorizationError(f"no Constant Contact tokens: {RELOGIN}")
        return self._tokens

    def save(self, tokens: StoredTokens) -> None:
        """Persist a pair (e.g. from ``ccsync auth login``) and use it from now on."""
        if self._path is not None:
            write_private_file(self._path, msgspec.json.encode(tokens))
        self._tokens = tokens

    def needs_refresh(self) -> bool:
        tokens = self.current()
        if not tokens.access_token:
            return True
        return tokens.expires_at is not None and tokens.expires_at - self._margin <= self._now()

    async def access_token(self, refresher: Refresher) -> str:
        """A usable access token, refreshed first when it expires within the margin."""
        tokens = self.current()
        if self.needs_refresh():
            tokens = await self.refresh(tokens.access_token, refresher)
        return tokens.access_token

    async def refresh(self, stale_access_token: str, refresher: Refresher) -> StoredTokens:
        """Replace ``stale_access_token`` (rejected or expiring), unless someone already did."""
        async with self._lock:
            with await asyncio.to_thread(self._flock):
                on_disk = self._read_file()
                if on_disk is not None:
                    self._tokens = on_disk
                tokens = self.current()
                fresh = tokens.access_token and tokens.access_token != stale_access_token
                if fresh and not self.needs_refresh():
                    return tokens  # another task or process refreshed while we waited
                if not tokens.refresh_token:
                    raise AuthorizationError(
                        f"access token expired and no refresh token: {RELOGIN}"
                    )
                new = await refresher(tokens.refresh_token)
                # Persist before first use: a rotating refresh token is now the only valid one.
                await asyncio.to_thread(self.save, new)
                self.refreshes += 1
                log.info("ctct.token_refreshed", expires_at=new.expires_at)
                return new

    @contextlib.contextmanager
    def _no_lock(self) -> Iterator[None]:
        yield

    def _flock(self) -> contextlib.AbstractContextManager[None]:
        """Take the cross-process lock beside the token file (blocking: run in a thread)."""
        if self._path is None:
            return self._no_lock()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path.with_name(self._path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)

        @contextlib.contextmanager
        def held() -> Iterator[None]:
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

        return held()
