"""Observing contacts (full fetch, then three incremental sweeps) and lists.

Each API page becomes one ``Page``: normalised records, rejected records (by contact_id and
field), the SHA-256 of the raw body, and the resume token after it. A page whose records do not
all decode is decoded record by record, so one bad record is rejected and the rest go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Final

import msgspec
import structlog

from engine.errors import CcsyncError
from engine.model import ListRecord
from engine.ports import Page, Rejected

from .client import CtctClient, CtctRequestError
from .config import CtctConfig
from .normalise import ContactNormaliser, normalise_list
from .paging import ContactSweeps
from .schema import CONTACT, CONTACTS_PAGE, RAW_CONTACTS_PAGE, Contact, ListsPage

__all__ = ["ContactBatch", "decode_contacts", "observe_contacts", "observe_lists"]

log = structlog.get_logger("ccsync.ctct")
_FIELD_RE: Final = re.compile(r"at `\$\.?([^`]*)`")
_lists_dec: Final = msgspec.json.Decoder(ListsPage)


class _IdOnly(msgspec.Struct):
    contact_id: str = "?"


_id_dec: Final = msgspec.json.Decoder(_IdOnly)


class ContactBatch(msgspec.Struct, frozen=True):
    """One decoded contacts page: records that decoded, those that did not, the next link."""

    contacts: list[Contact]
    undecodable: list[Rejected]
    next: str | None
    digest: str


def decode_contacts(body: bytes) -> ContactBatch:
    """Decode a GET /contacts body; msgspec.DecodeError (a cut-off body) propagates."""
    digest = hashlib.sha256(body).hexdigest()
    try:
        page = CONTACTS_PAGE.decode(body)
    except msgspec.ValidationError:
        pass
    else:
        nxt = page.links.next.href if page.links and page.links.next else None
        return ContactBatch(page.contacts, [], nxt, digest)
    raw = RAW_CONTACTS_PAGE.decode(body)
    good: list[Contact] = []
    bad: list[Rejected] = []
    for item in raw.contacts:
        try:
            good.append(CONTACT.decode(item))
        except msgspec.ValidationError as exc:
            try:
                cid = _id_dec.decode(item).contact_id
            except (msgspec.DecodeError, msgspec.ValidationError):
                cid = "?"
            m = _FIELD_RE.search(str(exc))
            field = m.group(1) if m else "?"
            bad.append(
                Rejected(record=cid, field=field, problem=str(exc), raw=bytes(item).decode())
            )
    nxt = raw.links.next.href if raw.links and raw.links.next else None
    return ContactBatch(good, bad, nxt, digest)


async def observe_contacts(
    client: CtctClient, cfg: CtctConfig, resume: str | None, bound: datetime
) -> AsyncIterator[Page]:
    """Pages of contacts: a full fetch when ``resume`` is None, else the incremental sweeps.

    The next page is requested as soon as its link is known, before this page is normalised
    and handed over: the server's time to answer overlaps ours to normalise and commit.
    """
    sweeps = ContactSweeps(resume, bound, overlap=cfg.overlap, page_size=cfg.page_size)

    def fetch() -> asyncio.Task[ContactBatch]:
        path, params = sweeps.request()
        return asyncio.ensure_future(client.call("GET", path, decode_contacts, params=params))

    normalise = ContactNormaliser()
    pending = fetch() if not sweeps.done else None
    restarted = False
    try:
        while pending is not None:
            path, params = sweeps.request()
            full, deleted = sweeps.full_scan, sweeps.phase == "deleted"
            try:
                batch = await pending
            except CtctRequestError as exc:
                # A next link kept in a checkpoint may have expired: the phase starts over
                # (repeats are harmless), once; anything else is the API's refusal to report.
                pending = None
                if params or restarted or exc.status not in (400, 404, 410):
                    raise
                log.warning("ctct.cursor_refused", request=path, status=exc.status)
                restarted = True
                sweeps.restart_phase()
                pending = fetch()
                continue
            pending = None
            token = sweeps.advance(batch.next)
            if not sweeps.done:
                pending = fetch()
                # A task starts at the loop's next turn: without one here, that turn came only
                # after this page was normalised and handed over, and the server waited on us.
                # One turn is enough for a kept-alive connection to send the request.
                await asyncio.sleep(0)
            records, rejected = normalise.page(batch.contacts, deleted=deleted)
            if batch.undecodable:
                rejected[:0] = batch.undecodable
            for r in rejected:
                log.warning(
                    "ctct.record_rejected", record=r.record, field=r.field, problem=r.problem
                )
            yield Page(
                request=client.describe("GET", path, params),
                contacts=tuple(records),
                rejected=tuple(rejected),
                content_hash=batch.digest,
                resume=token,
                full_scan=full,
            )
    finally:
        if pending is not None:  # the consumer stopped early: drop the page fetched ahead
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, CcsyncError):
                await pending


async def observe_lists(client: CtctClient) -> tuple[str, list[ListRecord]]:
    """Every contact list, deleted ones included (the API cannot filter lists by date)."""
    params = {"limit": "500", "status": "all"}
    request = client.describe("GET", "/contact_lists", params)
    path: str | None = "/contact_lists"
    out: list[ListRecord] = []
    seen: set[str] = set()
    while path is not None:
        page = await client.call("GET", path, _lists_dec.decode, params=params)
        out.extend(normalise_list(lst) for lst in page.lists)
        nxt = page.links.next.href if page.links and page.links.next else None
        if nxt is not None and nxt in seen:
            break
        path, params = nxt, {}
        if nxt is not None:
            seen.add(nxt)
    return request, out
