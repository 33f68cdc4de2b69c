"""The OAuth2 token endpoint: refresh, authorization code with PKCE, and the device flow.

Confidential clients authenticate with HTTP Basic (client_id:client_secret); public clients
(no secret) send ``client_id`` in the form and prove the code with PKCE. ``invalid_grant`` on a
refresh means the pair is dead (used rotating token, 180 days idle, revoked): only a human can
fix that, so it becomes AuthorizationError telling them how. Responses are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

import msgspec

from engine.errors import AuthorizationError, RetriableError

from .config import CtctConfig
from .schema import TokenResponse
from .tokens import RELOGIN, StoredTokens
from .transport import Request, Transport, TransportError

__all__ = [
    "DeviceGrant",
    "OAuthClient",
    "PkceRequest",
    "code_challenge",
    "new_pkce_request",
]

DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
_token_dec: Final = msgspec.json.Decoder(TokenResponse)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def code_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(sha256(verifier)) without padding."""
    return _b64(hashlib.sha256(verifier.encode()).digest())


class PkceRequest(msgspec.Struct, frozen=True, kw_only=True):
    """An authorization request in flight: the URL to open and what proves it later."""

    url: str
    verifier: str
    state: str


def new_pkce_request(cfg: CtctConfig) -> PkceRequest:
    """A fresh verifier, state and the authorization URL the user opens in a browser."""
    verifier = _b64(secrets.token_bytes(48))
    state = _b64(secrets.token_bytes(16))
    query = urlencode(
        {
            "client_id": cfg.client_id,
            "redirect_uri": cfg.redirect_uri,
            "response_type": "code",
            "scope": " ".join(cfg.scopes),
            "state": state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    return PkceRequest(url=f"{cfg.authorize_url}?{query}", verifier=verifier, state=state)


class DeviceGrant(msgspec.Struct, frozen=True, kw_only=True):
    """The device authorization answer: what to show the user, and what to poll with."""

    device_code: str
    user_code: str
    verification_uri: str | None = None
    verification_uri_complete: str | None = None
    expires_in: float = 600
    interval: float = 5


_device_dec: Final = msgspec.json.Decoder(DeviceGrant)


class OAuthClient:
    """Talks to the token endpoints of one registered application."""

    def __init__(
        self,
        cfg: CtctConfig,
        transport: Transport,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._cfg = cfg
        self._transport = transport
        self._sleep = sleep
        self._now = now
        self.requests_made = 0

    async def _post(self, url: str, form: dict[str, str]) -> tuple[int, bytes]:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if self._cfg.client_secret is not None:
            pair = f"{self._cfg.client_id}:{self._cfg.client_secret.reveal()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form = {**form, "client_id": self._cfg.client_id}
        body = urlencode(form).encode()
        # The token endpoint allows 1 request/s: a 429 or 5xx there is worth a few slow retries.
        for attempt in range(1, self._cfg.retries + 2):
            self.requests_made += 1
            try:
                resp = await self._transport.send(
                    Request(method="POST", url=url, headers=headers, body=body)
                )
            except TransportError as exc:
                problem = str(exc)
            else:
                if resp.status != 429 and resp.status < 500:
                    return resp.status, resp.body
                problem = f"HTTP {resp.status}"
            if attempt > self._cfg.retries:
                raise RetriableError(f"token endpoint: gave up after {attempt} attempts: {problem}")
            await self._sleep(
                max(1.0, self._cfg.backoff_base * 2**attempt) if self._cfg.backoff_base else 0
            )
        raise AssertionError("unreachable")

    def _tokens(self, status: int, body: bytes, what: str) -> StoredTokens:
        try:
            resp = _token_dec.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            resp = TokenResponse(error="invalid_response", error_description=f"HTTP {status}")
        if status == 200 and resp.access_token:
            return StoredTokens.issued(
                resp.access_token, resp.refresh_token, resp.expires_in, self._now()
            )
        detail = f"{resp.error}: {resp.error_description}" if resp.error else f"HTTP {status}"
        raise AuthorizationError(f"{what} failed ({detail}): {RELOGIN}")

    async def refresh(self, refresh_token: str) -> StoredTokens:
        """Exchange a refresh token for a new pair (the old one is dead if rotating)."""
        status, body = await self._post(
            self._cfg.token_url, {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        return self._tokens(status, body, "token refresh")

    async def exchange_code(self, code: str, verifier: str) -> StoredTokens:
        """Finish the PKCE flow with the code the redirect carried."""
        status, body = await self._post(
            self._cfg.token_url,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self._cfg.redirect_uri,
                "code_verifier": verifier,
            },
        )
        return self._tokens(status, body, "authorization code exchange")

    async def start_device(self) -> DeviceGrant:
        """Begin the device flow: the user visits a URL and types a code."""
        form = {"client_id": self._cfg.client_id, "scope": " ".join(self._cfg.scopes)}
        status, body = await self._post(self._cfg.device_authorize_url, form)
        try:
            if status == 200:
                return _device_dec.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        raise AuthorizationError(f"device authorization failed: HTTP {status}")

    async def poll_device(self, grant: DeviceGrant, *, max_polls: int = 1000) -> StoredTokens:
        """Poll until the user approves (or the code expires or is denied)."""
        interval = grant.interval
        for _ in range(max_polls):
            status, body = await self._post(
                self._cfg.token_url, {"grant_type": DEVICE_GRANT, "device_code": grant.device_code}
            )
            try:
                pending = _token_dec.decode(body).error
            except (msgspec.DecodeError, msgspec.ValidationError):
                pending = None
            if status != 200 and pending in ("authorization_pending", "slow_down"):
                interval += 5 if pending == "slow_down" else 0
                await self._sleep(interval)
                continue
            return self._tokens(status, body, "device authorization")
        raise AuthorizationError(f"device authorization was not approved in time: {RELOGIN}")
