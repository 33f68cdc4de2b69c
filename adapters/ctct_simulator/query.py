"""GET /contacts: the query, its filters, and cursor paging.

Contacts are scanned in creation order (``seq``, which never changes), and the cursor carries
the whole query plus the last ``seq`` served. A contact that exists for the whole scan is
therefore never missed, however the account changes between pages.

A time filter (``updated_after``, ``created_before``, ``optout_after``...) is answered from the
account's time index (adapters/ctct_simulator/timeindex.py) as the real API does: the contacts
in the time range, in ``seq`` order, each still tested against the whole filter. The answer,
the order and the cursors are exactly those of the scan; only the contacts looked at differ.
"""

from __future__ import annotations

import base64
from bisect import bisect_right
from collections.abc import Callable, Mapping
from typing import Final

import msgspec

from adapters.ctct_simulator.account import Account, normalise
from adapters.ctct_simulator.clock import parse_iso_ms
from adapters.ctct_simulator.contact import INCLUDES, Contact, include_mask
from adapters.ctct_simulator.errors import Invalid
from adapters.ctct_simulator.timeindex import Field

__all__ = [
    "ContactQuery",
    "candidates",
    "count",
    "decode_cursor",
    "encode_cursor",
    "parse_query",
    "scan",
]

STATUSES: Final = frozenset(
    ("all", "active", "deleted", "not_set", "pending_confirmation", "temp_hold", "unsubscribed")
)
SMS_STATUSES: Final = frozenset(
    ("all", "explicit", "unsubscribed", "pending_confirmation", "not_set")
)
_PARAMS: Final = frozenset(
    (
        "status",
        "email",
        "lists",
        "segment_id",
        "tags",
        "updated_after",
        "updated_before",
        "created_after",
        "created_before",
        "optout_after",
        "optout_before",
        "include",
        "sms_status",
        "include_count",
        "limit",
        "cursor",
    )
)
_TIME_PARAMS: Final = (
    "updated_after",
    "updated_before",
    "created_after",
    "created_before",
    "optout_after",
    "optout_before",
)


class ContactQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A parsed GET /contacts request (what the cursor carries from page to page)."""

    status: tuple[str, ...] = ()
    email: str | None = None
    lists: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    updated_after: int | None = None
    updated_before: int | None = None
    created_after: int | None = None
    created_before: int | None = None
    optout_after: int | None = None
    optout_before: int | None = None
    include: int = 0
    include_count: bool = False
    limit: int = 50

    def predicate(self) -> Callable[[Contact], bool]:
        """The filter as one function (the common default is a fast special case)."""
        statuses = set(self.status)
        checks: list[Callable[[Contact], bool]] = []
        if not statuses:
            checks.append(lambda c: c.deleted_at is None)
        elif "all" not in statuses:
            want = frozenset(statuses - {"active", "deleted"})
            active = "active" in statuses
            deleted = "deleted" in statuses

            def status_ok(c: Contact) -> bool:
                if c.deleted_at is not None:
                    return deleted
                return c.permission in want or (active and c.permission in ("explicit", "implicit"))

            checks.append(status_ok)
        if self.email is not None:
            key = normalise(self.email)
            checks.append(lambda c: normalise(c.email) == key)
        if self.lists:
            wanted = frozenset(self.lists)
            checks.append(lambda c: not wanted.isdisjoint(c.lists))
        if self.tags:
            tags = frozenset(self.tags)
            checks.append(lambda c: not tags.isdisjoint(c.taggings))
        # Boundaries (strict after, strict before) are undocumented; clients must overlap.
        if (t := self.updated_after) is not None:
            checks.append(lambda c: c.updated_at > t)
        if (t1 := self.updated_before) is not None:
            checks.append(lambda c: c.updated_at < t1)
        if (t2 := self.created_after) is not None:
            checks.append(lambda c: c.created_at > t2)
        if (t3 := self.created_before) is not None:
            checks.append(lambda c: c.created_at < t3)
        if (t4 := self.optout_after) is not None:
            checks.append(
                lambda c: (
                    c.opt_out_date is not None
                    and c.permission == "unsubscribed"
                    and c.opt_out_date > t4
                )
            )
        if (t5 := self.optout_before) is not None:
            checks.append(
                lambda c: (
                    c.opt_out_date is not None
                    and c.permission == "unsubscribed"
                    and c.opt_out_date < t5
                )
            )
        return _conjunction(checks)


def _conjunction(checks: list[Callable[[Contact], bool]]) -> Callable[[Contact], bool]:
    """``all(checks)`` as nested closures: a sparse filter over a million contacts runs each
    check directly instead of through a generator (about 3x cheaper per contact)."""
    if not checks:
        return lambda c: True  # status=all and no other filter
    if len(checks) == 1:
        return checks[0]
    first, rest = checks[0], _conjunction(checks[1:])
    return lambda c: first(c) and rest(c)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_query(params: Mapping[str, str]) -> tuple[ContactQuery, int]:
    """Validate GET /contacts parameters; returns (query, last seq served or -1)."""
    for name in params:
        if name not in _PARAMS:
            raise Invalid(f"{name}: is not a parameter of GET /contacts")
    limit_text = params.get("limit")
    limit: int | None = None
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            raise Invalid(f"limit: {limit_text!r} is not an integer") from None
        if not 1 <= limit <= 500:
            raise Invalid(f"limit: {limit} is not between 1 and 500")
    if "cursor" in params:
        query, after = decode_cursor(params["cursor"])
        if limit is not None:
            query = msgspec.structs.replace(query, limit=limit)
        return query, after
    if "segment_id" in params:
        raise Invalid("segment_id: segments are not simulated")
    status = _csv(params.get("status", ""))
    for s in status:
        if s not in STATUSES:
            raise Invalid(f"status: {s!r} is not one of {sorted(STATUSES)}")
    for s in _csv(params.get("sms_status", "")):
        if s not in SMS_STATUSES:
            raise Invalid(f"sms_status: {s!r} is not one of {sorted(SMS_STATUSES)}")
    lists = _csv(params.get("lists", ""))
    if len(lists) > 25:
        raise Invalid(f"lists: {len(lists)} list ids given, at most 25 allowed")
    tags = _csv(params.get("tags", ""))
    if len(tags) > 50:
        raise Invalid(f"tags: {len(tags)} tag ids given, at most 50 allowed")
    includes = _csv(params.get("include", ""))
    for name in includes:
        if name not in INCLUDES:
            raise Invalid(f"include: {name!r} is not one of {sorted(INCLUDES)}")
    times: dict[str, int] = {}
    for name in _TIME_PARAMS:
        if name in params:
            try:
                times[name] = parse_iso_ms(params[name])
            except ValueError as exc:
                raise Invalid(f"{name}: {exc}") from None
    count_text = params.get("include_count", "false").lower()
    if count_text not in ("true", "false"):
        raise Invalid(f"include_count: {count_text!r} is not true or false")
    query = ContactQuery(
        status=tuple(status),
        email=params.get("email"),
        lists=tuple(lists),
        tags=tuple(tags),
        include=include_mask(includes),
        include_count=count_text == "true",
        limit=limit if limit is not None else 50,
        **times,
    )
    return query, -1


class _Cursor(msgspec.Struct, array_like=True):
    query: ContactQuery
    after: int


_cursor_encoder = msgspec.json.Encoder()
_cursor_decoder = msgspec.json.Decoder(_Cursor)


def encode_cursor(query: ContactQuery, after: int) -> str:
    """An opaque, URL-safe cursor for the page after ``seq`` ``after``."""
    raw = _cursor_encoder.encode(_Cursor(query, after))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> tuple[ContactQuery, int]:
    """Decode a cursor; Invalid when it was not made here."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cur = _cursor_decoder.decode(raw)
    except (ValueError, msgspec.DecodeError):
        raise Invalid(f"cursor: {text[:40]!r} is not a valid cursor") from None
    return cur.query, cur.after


def candidates(account: Account, query: ContactQuery) -> list[int] | None:
    """The ``seq`` of every contact the time index says may match (ascending), or None when
    the query is better answered by a scan (no time filter, or one matching much of the
    account). The caller still applies the whole predicate to each candidate."""
    index = account.index
    best: tuple[int, Field, int | None, int | None] | None = None
    ranges: tuple[tuple[Field, int | None, int | None], ...] = (
        ("updated", query.updated_after, query.updated_before),
        ("created", query.created_after, query.created_before),
        ("optout", query.optout_after, query.optout_before),
    )
    for field, after, before in ranges:
        if after is None and before is None:
            continue
        if index.cached(field, after, before):
            return index.seqs(field, after, before)
        n = index.count(field, after, before)
        if best is None or n < best[0]:
            best = (n, field, after, before)
    if best is None or best[0] * index.scan_share > len(account.contacts):
        return None
    return index.seqs(best[1], best[2], best[3])


def scan(account: Account, query: ContactQuery, after: int) -> tuple[list[Contact], int | None]:
    """One page: up to ``limit`` matches after ``seq`` ``after``, and the seq to continue
    after (None on the last page)."""
    contacts = account.contacts
    if query.email is not None:
        c = account.find_email(query.email)
        hits = [c] if c is not None and c.seq > after and query.predicate()(c) else []
        return hits, None
    pred = query.predicate()
    limit = query.limit
    out: list[Contact] = []
    seqs = candidates(account, query)
    if seqs is not None:
        for k in range(bisect_right(seqs, after), len(seqs)):
            c = contacts[seqs[k]]
            if pred(c):
                if len(out) == limit:
                    return out, out[-1].seq  # a further match exists: there is a next page
                out.append(c)
        return out, None
    n = len(contacts)
    i = after + 1
    while i < n:
        c = contacts[i]
        if pred(c):
            if len(out) == limit:
                return out, out[-1].seq
            out.append(c)
        i += 1
    return out, None


def count(account: Account, query: ContactQuery) -> int:
    """How many contacts match (for ``include_count``)."""
    if query.email is not None:
        c = account.find_email(query.email)
        return 1 if c is not None and query.predicate()(c) else 0
    pred = query.predicate()
    seqs = candidates(account, query)
    if seqs is not None:
        contacts = account.contacts
        return sum(1 for s in seqs if pred(contacts[s]))
    return sum(1 for c in account.contacts if pred(c))
