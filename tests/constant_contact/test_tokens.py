"""TokenStore: 0600 file, atomic persistence, one refresh across tasks and token-store instances."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from adapters.constant_contact import StoredTokens, TokenStore
from engine.errors import AuthorizationError, ConfigError

NOW = datetime(2026, 5, 1, tzinfo=UTC)


class RotatingServer:
    """A token endpoint with single-use refresh tokens, counting exchanges."""

    def __init__(self) -> None:
        self.live = {"r0"}
        self.exchanges = 0

    async def refresh(self, refresh_token: str) -> StoredTokens:
        await asyncio.sleep(0)  # let other tasks run mid-exchange
        if refresh_token not in self.live:
            raise AuthorizationError("invalid_grant: re-authorise with `ccsync auth login`")
        self.live.discard(refresh_token)
        self.exchanges += 1
        new = f"r{self.exchanges}"
        self.live.add(new)
        return StoredTokens(
            access_token=f"a{self.exchanges}", refresh_token=new, expires_at=NOW + timedelta(days=1)
        )


def write(path: Path, tokens: StoredTokens, mode: int = 0o600) -> None:
    path.write_bytes(msgspec.json.encode(tokens))
    path.chmod(mode)


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write(path, StoredTokens(access_token="a"), mode=0o644)
    with pytest.raises(ConfigError) as info:
        TokenStore(path).current()
    assert "chmod 600" in str(info.value)


def test_saved_tokens_are_private_and_never_printed(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tokens.json"
    store = TokenStore(path)
    tokens = StoredTokens(access_token="secret-a", refresh_token="secret-r")
    store.save(tokens)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TokenStore(path).current() == tokens
    assert "secret" not in repr(tokens)
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]  # no temp file left


@pytest.mark.asyncio
async def test_concurrent_refreshes_in_one_process_exchange_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    write(path, StoredTokens(access_token="a0", refresh_token="r0", expires_at=NOW))
    server = RotatingServer()
    store = TokenStore(path, now=lambda: NOW)
    got = await asyncio.gather(*(store.access_token(server.refresh) for _ in range(10)))
    assert set(got) == {"a1"}
    assert server.exchanges == 1
    on_disk = msgspec.json.decode(path.read_bytes(), type=StoredTokens)
    assert on_disk.refresh_token == "r1"  # persisted before use


@pytest.mark.asyncio
async def test_two_stores_on_one_file_share_a_rotation(tmp_path: Path) -> None:
    """Two processes' stores: the file lock and re-read keep a single-use token single-use."""
    path = tmp_path / "tokens.json"
    write(path, StoredTokens(access_token="a0", refresh_token="r0"))
    server = RotatingServer()
    one, two = TokenStore(path, now=lambda: NOW), TokenStore(path, now=lambda: NOW)
    one.current(), two.current()  # both loaded a0/r0 before either refreshed
    got = await asyncio.gather(one.refresh("a0", server.refresh), two.refresh("a0", server.refresh))
    assert server.exchanges == 1
    assert {t.access_token for t in got} == {"a1"}


@pytest.mark.asyncio
async def test_dead_refresh_token_asks_for_login_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    before = StoredTokens(access_token="a0", refresh_token="gone")
    write(path, before)
    store = TokenStore(path)
    with pytest.raises(AuthorizationError, match="ccsync auth login"):
        await store.refresh("a0", RotatingServer().refresh)
    assert msgspec.json.decode(path.read_bytes(), type=StoredTokens) == before


@pytest.mark.asyncio
async def test_environment_tokens_are_used_until_a_refresh_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    store = TokenStore(path, initial=StoredTokens(access_token="a0", refresh_token="r0"))
    assert await store.access_token(RotatingServer().refresh) == "a0"
    assert not path.exists()
    await store.refresh("a0", RotatingServer().refresh)
    assert path.exists() and os.stat(path).st_mode & 0o077 == 0
