"""Login: PKCE and the device flow against the simulator, through the API and the CLI."""

from __future__ import annotations

import io
import re
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import structlog

from adapters.constant_contact import StoredTokens
from adapters.constant_contact.login import login_pkce, parse_redirect
from adapters.ctct_simulator import Simulator, SimulatorConfig
from engine.cli import main
from engine.errors import AuthorizationError

from .conftest import Env


def test_parse_redirect_accepts_the_url_or_the_bare_code() -> None:
    assert parse_redirect("abc123", "s1") == "abc123"
    assert parse_redirect("https://localhost/cb?code=xyz&state=s1", "s1") == "xyz"
    with pytest.raises(AuthorizationError, match="state"):
        parse_redirect("https://localhost/cb?code=xyz&state=other", "s1")
    with pytest.raises(AuthorizationError, match="access_denied"):
        parse_redirect("https://localhost/cb?error=access_denied&state=s1", "s1")


@pytest.mark.asyncio
async def test_pkce_login_stores_a_working_pair_privately(make_env: Any) -> None:
    env: Env = await make_env(contacts=5)
    env.token_file.unlink()

    async def browser(url: str) -> str:
        async with (
            aiohttp.ClientSession() as s,
            s.get(url, allow_redirects=False) as resp,
        ):
            assert resp.status == 302
            return resp.headers["Location"]

    tokens = await login_pkce(env.cfg, browser)
    assert tokens.refresh_token  # offline_access was asked for
    assert stat.S_IMODE(env.token_file.stat().st_mode) == 0o600
    async with await env.open() as ctct:
        _, lists = await ctct.observe_lists()
    assert lists


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator.start_in_thread(SimulatorConfig(contacts=5, seed=3))
    yield s
    s.stop()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures structlog to the (captured) stderr of the moment: undo it after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def write_config(tmp_path: Path, sim: Simulator) -> Path:
    cfg = tmp_path / "ccsync.toml"
    cfg.write_text(
        "[ctct]\n"
        f'client_id = "{sim.client_id}"\n'
        f'base_url = "{sim.base_url}"\n'
        f'token_url = "{sim.token_url}"\n'
        f'authorize_url = "{sim.authorize_url}"\n'
        f'device_authorize_url = "{sim.device_authorize_url}"\n'
        f'redirect_uri = "{sim.redirect_uri}"\n'
        'token_file = "secrets/tokens.json"\n'
    )
    return cfg


def test_cli_device_login_saves_tokens_and_prints_none(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    cfg = write_config(tmp_path, sim)
    assert main(["auth", "login", "--device", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "enter the code" in out and "Saved an access token" in out
    saved = msgspec.json.decode((tmp_path / "secrets/tokens.json").read_bytes(), type=StoredTokens)
    assert saved.access_token not in out
    assert saved.refresh_token is not None and saved.refresh_token not in out


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class BrowserStdin(io.StringIO):
    """The user: reads the URL ccsync printed, approves it, pastes back the redirect URL."""

    def __init__(self, stdout: io.StringIO) -> None:
        super().__init__()
        self.stdout = stdout

    def readline(self, size: int | None = -1) -> str:
        url = re.search(r"(http://\S+authorize\?\S+)", self.stdout.getvalue())
        assert url is not None
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(url.group(1))
        info.value.close()  # the 302's connection
        assert info.value.code == 302
        return str(info.value.headers["Location"]) + "\n"


def test_cli_pkce_login_reads_the_redirect_back(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    cfg = write_config(tmp_path, sim)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stdin", BrowserStdin(out))
    assert main(["auth", "login", "--config", str(cfg)]) == 0
    assert "code_challenge_method=S256" in out.getvalue()
    saved = msgspec.json.decode((tmp_path / "secrets/tokens.json").read_bytes(), type=StoredTokens)
    assert saved.access_token not in out.getvalue()
