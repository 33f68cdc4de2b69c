"""The API client: budget, bearer token, bounded retries and error translation, in one place.

Per request: take a slot from the rate budget, attach a fresh access token, send, and sort the
answer. 2xx -> decode (a body that does not parse is a truncated answer: retried). 401 -> refresh
the token once and resend. 429 ``quota_exceeded`` -> no more calls until 00:00 UTC
(QuotaExhaustedError). 429 ``throttled``, 5xx, resets, timeouts -> retried with jittered
exponential backoff, at most ``retries`` times. Any other 4xx -> CtctRequestError carrying the
API's own error text: fatal for that request.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final, TypeVar
from urllib.parse import urlencode, urlsplit

import msgspec
import structlog

from engine.errors import AuthorizationError, FatalError, QuotaExhaustedError, RetriableError

from .budget import Budget, next_utc_midnight
from .config import CtctConfig
from .schema import ApiError
from .tokens import RELOGIN, Refresher, TokenStore
from .transport import Request, Response, Transport, TransportError

__all__ = ["CtctClient", "CtctRequestError", "CtctResponseError", "api_error_text"]

log = structlog.get_logger("ccsync.ctct")
_T = TypeVar("_T")
_errors_dec: Final = msgspec.json.Decoder(list[ApiError] | ApiError)


class CtctRequestError(FatalError):
    """The API refused one request (4xx other than 401/429); carries the API's own text."""

    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.text = text
        super().__init__(f"Constant Contact refused {method} {path}: HTTP {status}: {text}")


class CtctResponseError(FatalError):
    """A 2xx answer whose JSON does not have the shape the API documents."""


def api_error_text(body: bytes) -> tuple[str | None, str]:
    """(error_key, readable text) from an error body: an array of errors or a single object."""
    try:
        parsed = _errors_dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, body[:500].decode("utf-8", "replace") or "(empty body)"
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        return None, "(no error detail)"
    text = "; ".join(f"{e.error_key}: {e.error_message}" for e in items)
    return items[0].error_key, text


class CtctClient:
    """Sends API requests for one account within one application key's budget."""

    def __init__(
        self,
        cfg: CtctConfig,
        transport: Transport,
        budget: Budget,
        tokens: TokenStore,
        refresher: Refresher,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._cfg = cfg
        self._transport = transport
        self._budget = budget
        self._tokens = tokens
        self._refresher = refresher
        self._sleep = sleep
        self._rng = rng
        self._now = now
        split = urlsplit(cfg.base_url)
        self._origin = f"{split.scheme}://{split.netloc}"
        self._base_path = split.path.rstrip("/")  # "/v3"
        self.requests_made = 0
        self.retries_made = 0

    @property
    def budget(self) -> Budget:
        return self._budget

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """``/contacts`` -> base URL + path; a next link (``/v3/contacts?cursor=…``) -> origin."""
        if path.startswith(("http://", "https://")):
            url = path
        elif self._base_path and path.startswith(self._base_path + "/"):
            url = self._origin + path
        else:
            url = self._origin + self._base_path + path
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, safe=",:")
        return url

    def describe(self, method: str, path: str, params: Mapping[str, str] | None = None) -> str:
        """The request as recorded in the audit trail: method, path and query, no token."""
        split = urlsplit(self.url(path, params))
        return f"{method} {split.path}{'?' + split.query if split.query else ''}"

    async def call(
        self,
        method: str,
        path: str,
        decode: Callable[[bytes], _T],
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> _T:
        """Send until answered; decode a 2xx body with ``decode`` (DecodeError: retried)."""
        url = self.url(path, params)
        where = self.describe(method, path, params)
        attempt = 0
        refreshed = False
        while True:
            await self._budget.acquire()
            token = await self._tokens.access_token(self._refresher)
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            self.requests_made += 1
            started = time.perf_counter()
            try:
                resp = await self._transport.send(
                    Request(method=method, url=url, headers=headers, body=body)
                )
            except TransportError as exc:
                problem: str = str(exc)
            else:
                log.debug(
                    "ctct.request",
                    request=where,
                    status=resp.status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
                if 200 <= resp.status < 300:
                    try:
                        return decode(resp.body)
                    except msgspec.DecodeError as exc:
                        problem = f"{where}: unreadable answer (cut short?): {exc}"
                    except msgspec.ValidationError as exc:
                        raise CtctResponseError(f"{where}: unexpected answer: {exc}") from exc
                elif resp.status == 401:
                    if refreshed:
                        raise AuthorizationError(
                            f"Constant Contact rejected a freshly refreshed token on {where}: "
                            f"{RELOGIN}"
                        )
                    refreshed = True
                    await self._tokens.refresh(token, self._refresher)
                    continue
                else:
                    problem = self._sort_failure(method, path, where, resp)
            attempt += 1
            self.retries_made += 1
            if attempt > self._cfg.retries:
                raise RetriableError(f"{where}: gave up after {attempt} attempts: {problem}")
            delay = self.backoff(attempt)
            log.warning("ctct.retry", request=where, attempt=attempt, delay=delay, problem=problem)
            if delay > 0:
                await self._sleep(delay)

    def _sort_failure(self, method: str, path: str, where: str, resp: Response) -> str:
        """Raise for a fatal answer; return the problem text of a retriable one."""
        key, text = api_error_text(resp.body)
        if resp.status == 429 and key == "quota_exceeded":
            until = next_utc_midnight(self._now())
            self._budget.mark_exhausted(until)
            log.error("ctct.quota_exhausted", request=where, until=until.isoformat())
            raise QuotaExhaustedError(
                f"Constant Contact daily quota exceeded on {where}", str(until)
            )
        if resp.status == 429 or resp.status >= 500 or resp.status == 408:
            return f"HTTP {resp.status}: {text}"
        raise CtctRequestError(method, urlsplit(self.url(path)).path, resp.status, text)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff: uniform in [base*2^(n-1)/2, base*2^(n-1)], capped."""
        cfg = self._cfg
        if cfg.backoff_base <= 0:
            return 0.0
        ceiling = min(cfg.backoff_max, cfg.backoff_base * 2.0 ** (attempt - 1))
        return float(ceiling * (0.5 + self._rng() / 2))
