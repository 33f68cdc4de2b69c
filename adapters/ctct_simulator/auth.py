"""OAuth2 as Constant Contact's authorization server (Okta) does it, for one test client.

Authorization code with PKCE (S256, single-use codes), the refresh_token grant with rotating
refresh tokens (a used one is dead: ``invalid_grant``), and the device flow. Access tokens are
JWT-shaped and live 24 hours on the simulator clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from typing import Final

import msgspec

from adapters.ctct_simulator.clock import SimClock

__all__ = ["ACCESS_TTL_S", "AuthServer", "Grant", "OAuthError", "Tokens"]

ACCESS_TTL_S: Final = 24 * 3600
CODE_TTL_MS: Final = 10 * 60 * 1000
REFRESH_IDLE_MS: Final = 180 * 24 * 3600 * 1000
DEFAULT_SCOPE: Final = "contact_data campaign_data account_read offline_access"


class Tokens(msgspec.Struct, frozen=True, kw_only=True):
    """What the token endpoint returns."""

    access_token: str
    refresh_token: str | None
    expires_in: int
    token_type: str = "Bearer"
    scope: str = DEFAULT_SCOPE


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """A live access token: whose it is and until when."""

    client_id: str
    scope: str
    expires_at_ms: int


class OAuthError(Exception):
    """An OAuth error answer: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        """The JSON body."""
        return {"error": self.error, "error_description": self.description}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AuthServer:
    """The registered test client, its codes and tokens."""

    def __init__(self, clock: SimClock, seed: int, redirect_uri: str) -> None:
        self._clock = clock
        self._rng = random.Random(f"auth:{seed}")
        self.client_id = f"{self._rng.getrandbits(128):032x}"
        self.client_secret = _b64(self._rng.getrandbits(256).to_bytes(32, "big"))
        self.redirect_uri = redirect_uri
        self._key = self._rng.getrandbits(256).to_bytes(32, "big")
        self._codes: dict[str, tuple[str, str, str, int]] = {}  # code -> challenge, uri, scope, exp
        self._devices: dict[str, tuple[str, int]] = {}  # device_code -> scope, expiry
        self.access: dict[str, Grant] = {}
        self._refresh: dict[str, tuple[str, int]] = {}  # live refresh token -> scope, last use

    def _secret(self, nbytes: int = 32) -> str:
        return _b64(self._rng.getrandbits(nbytes * 8).to_bytes(nbytes, "big"))

    def issue(self, scope: str = DEFAULT_SCOPE) -> Tokens:
        """Mint an access token (and a refresh token when ``offline_access`` is in scope)."""
        now = self._clock.now_ms()
        exp = now + ACCESS_TTL_S * 1000
        header = _b64(b'{"kid":"sim","alg":"HS256"}')
        claims = {
            "ver": 1,
            "jti": self._secret(12),
            "iss": "https://authz.constantcontact.com/oauth2/default",
            "aud": "https://api.cc.email/v3",
            "iat": now // 1000,
            "exp": exp // 1000,
            "cid": self.client_id,
            "scp": scope.split(),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        access = f"{header}.{payload}.{sig}"
        self.access[access] = Grant(client_id=self.client_id, scope=scope, expires_at_ms=exp)
        refresh = None
        if "offline_access" in scope.split():
            refresh = self._secret()
            self._refresh[refresh] = (scope, now)
        return Tokens(
            access_token=access, refresh_token=refresh, expires_in=ACCESS_TTL_S, scope=scope
        )

    def check(self, token: str) -> Grant | None:
        """The grant behind a bearer token, or None when unknown or expired."""
        grant = self.access.get(token)
        if grant is None or grant.expires_at_ms <= self._clock.now_ms():
            return None
        return grant

    def authorize(
        self, *, client_id: str, redirect_uri: str, scope: str, challenge: str, method: str
    ) -> str:
        """Approve an authorization request at once (there is no user to ask); returns a code."""
        if client_id != self.client_id:
            raise OAuthError("invalid_client", "unknown client_id", 401)
        if redirect_uri != self.redirect_uri:
            raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
        if challenge and method != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256")
        code = self._secret(16)
        self._codes[code] = (challenge, redirect_uri, scope, self._clock.now_ms() + CODE_TTL_MS)
        return code

    def device_authorize(self, client_id: str, scope: str) -> tuple[str, str]:
        """Start a device flow (approved at once); returns (device_code, user_code)."""
        if client_id != self.client_id:
            raise OAuthError("invalid_client", "unknown client_id", 401)
        device_code = self._secret(24)
        self._devices[device_code] = (scope, self._clock.now_ms() + CODE_TTL_MS)
        return device_code, f"{self._rng.randrange(10**8):08d}"

    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> Tokens:
        """The token endpoint: authorization_code, refresh_token and device_code grants."""
        client_id = basic[0] if basic else form.get("client_id", "")
        if client_id != self.client_id:
            raise OAuthError("invalid_client", "Client authentication failed.", 401)
        if basic is not None and basic[1] != self.client_secret:
            raise OAuthError("invalid_client", "Client authentication failed.", 401)
        grant = form.get("grant_type", "")
        if grant == "authorization_code":
            return self._exchange_code(form, confidential=basic is not None)
        if grant == "refresh_token":
            return self._refresh_grant(form.get("refresh_token", ""))
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            entry = self._devices.pop(form.get("device_code", ""), None)
            if entry is None or entry[1] <= self._clock.now_ms():
                raise OAuthError("invalid_grant", "The device code is invalid or has expired.")
            return self.issue(entry[0])
        raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _exchange_code(self, form: dict[str, str], *, confidential: bool) -> Tokens:
        entry = self._codes.pop(form.get("code", ""), None)  # single use, even when wrong
        if entry is None or entry[3] <= self._clock.now_ms():
            raise OAuthError("invalid_grant", "The authorization code is invalid or has expired.")
        challenge, uri, scope, _ = entry
        if form.get("redirect_uri") != uri:
            raise OAuthError("invalid_grant", "The redirect_uri does not match the authorization")
        verifier = form.get("code_verifier")
        if challenge:
            digest = _b64(hashlib.sha256((verifier or "").encode()).digest())
            if not hmac.compare_digest(digest, challenge):
                raise OAuthError("invalid_grant", "PKCE verification failed.")
        elif not confidential:
            raise OAuthError("invalid_client", "a public client must use PKCE", 401)
        return self.issue(scope)

    def _refresh_grant(self, token: str) -> Tokens:
        entry = self._refresh.pop(token, None)  # rotation: a used refresh token is dead
        now = self._clock.now_ms()
        if entry is None or entry[1] + REFRESH_IDLE_MS <= now:
            raise OAuthError("invalid_grant", "unknown, invalid, or expired refresh token")
        return self.issue(entry[0])
