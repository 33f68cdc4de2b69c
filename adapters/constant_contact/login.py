"""Obtaining the first token pair: authorization code with PKCE, or the device flow.

Both end the same way: the pair is written to the configured token file (0600, atomically) and
never printed. ``ccsync auth login`` is a thin shell over these two functions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import aiohttp

from engine.errors import AuthorizationError, ConfigError

from .config import CtctConfig
from .oauth import DeviceGrant, OAuthClient, new_pkce_request
from .tokens import StoredTokens, TokenStore
from .transport import AiohttpTransport

__all__ = ["login_device", "login_pkce", "oauth_client", "parse_redirect"]


@asynccontextmanager
async def oauth_client(cfg: CtctConfig) -> AsyncIterator[OAuthClient]:
    """An OAuthClient on its own short-lived session."""
    timeout = aiohttp.ClientTimeout(
        total=None, connect=cfg.connect_timeout, sock_read=cfg.read_timeout
    )
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield OAuthClient(cfg, AiohttpTransport(session))


def parse_redirect(answer: str, state: str) -> str:
    """The code from what the user pasted: the redirect URL (state checked) or the bare code."""
    answer = answer.strip()
    if not answer:
        raise AuthorizationError("no authorization code given")
    if "://" not in answer and "?" not in answer:
        return answer
    query = parse_qs(urlsplit(answer).query)
    if "error" in query:
        detail = query.get("error_description", query["error"])[0]
        raise AuthorizationError(f"authorization refused: {query['error'][0]}: {detail}")
    if query.get("state", [state])[0] != state:
        raise AuthorizationError("the redirect's state does not match this login: start again")
    codes = query.get("code")
    if not codes:
        raise AuthorizationError("the pasted URL carries no code")
    return codes[0]


def _store(cfg: CtctConfig) -> TokenStore:
    if cfg.token_file is None:
        raise ConfigError("ctct.token_file", "set a token file to keep the tokens login obtains")
    return TokenStore(cfg.token_file)


async def login_pkce(cfg: CtctConfig, ask: Callable[[str], Awaitable[str]]) -> StoredTokens:
    """Show the authorization URL through ``ask``; its answer is the redirect URL or the code."""
    store = _store(cfg)
    request = new_pkce_request(cfg)
    code = parse_redirect(await ask(request.url), request.state)
    async with oauth_client(cfg) as oauth:
        tokens = await oauth.exchange_code(code, request.verifier)
    store.save(tokens)
    return tokens


async def login_device(cfg: CtctConfig, show: Callable[[DeviceGrant], None]) -> StoredTokens:
    """Start the device flow, ``show`` the user where to go, poll until approved."""
    store = _store(cfg)
    async with oauth_client(cfg) as oauth:
        grant = await oauth.start_device()
        show(grant)
        tokens = await oauth.poll_device(grant)
    store.save(tokens)
    return tokens
