"""Campaign tracking: per campaign activity, six reports read newest first down to what we have.

The v3 reports have no date filter (pitfall 16), so the resume token keeps, per campaign
activity and kind, the newest ``created_time`` already recorded; a walk stops at the first
older record. A walk's mark moves only when the walk ends, so a crash mid-walk re-reads from the
top (repeats are harmless: the engine's event ids are content-derived) and never skips. Times
past the run's ``bound`` are left for the next run. Tracking is optional work: when the day's
budget runs below ``tracking_reserve`` it stops and leaves the rest to a later run, so contact
sync never starves.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Final

import msgspec
import structlog

from engine.errors import ConfigError
from engine.model import TrackingActivity, TrackingKind, is_valid_email, normalise_email
from engine.ports import Rejected, TrackingPage

from .client import CtctClient, CtctRequestError
from .config import CtctConfig
from .normalise import utc
from .paging import format_time
from .schema import Campaign, CampaignDetail, CampaignsPage, TrackingRecord, TrackingRecordsPage

__all__ = ["REPORTS", "TrackingCursor", "observe_tracking"]

log = structlog.get_logger("ccsync.ctct")

# Report path -> the engine's kind. (unique_opens and didnotopens add nothing per contact.)
REPORTS: Final[tuple[tuple[str, TrackingKind], ...]] = (
    ("sends", "send"),
    ("opens", "open"),
    ("clicks", "click"),
    ("bounces", "bounce"),
    ("forwards", "forward"),
    ("optouts", "optout"),
)
_TRACKED_ROLES: Final = frozenset(("primary_email", "resend"))
_UNSENT: Final = frozenset(("Draft", "Scheduled"))
_campaigns: Final = msgspec.json.Decoder(CampaignsPage)
_detail: Final = msgspec.json.Decoder(CampaignDetail)
_records: Final = msgspec.json.Decoder(TrackingRecordsPage)
_encoder: Final = msgspec.json.Encoder()


class TrackingCursor(msgspec.Struct, frozen=True, kw_only=True):
    """The tracking resume token: ``"<campaign_activity_id>/<kind>"`` -> newest time recorded."""

    v: int = 1
    marks: dict[str, datetime] = {}


_cursor: Final = msgspec.json.Decoder(TrackingCursor)


def _to_activity(
    rec: TrackingRecord, kind: TrackingKind, name: str | None, created: datetime
) -> TrackingActivity | Rejected:
    email = normalise_email(rec.email_address or "")
    if not is_valid_email(email):
        return Rejected(
            record=rec.contact_id,
            field="email_address",
            problem=f"not an email address: {rec.email_address!r}",
            raw=_encoder.encode(rec).decode(),
        )
    details = {
        k: str(v)
        for k, v in (
            ("device_type", rec.device_type),
            ("url_id", rec.url_id),
            ("link_url", rec.link_url),
            ("bounce_code", rec.bounce_code),
            ("opt_out_reason", rec.opt_out_reason),
        )
        if v is not None
    }
    return TrackingActivity(
        contact_id=rec.contact_id,
        email=email,
        campaign_activity_id=rec.campaign_activity_id,
        kind=kind,
        created_time=created,
        campaign_name=name,
        details=details,
    )


async def _campaigns_since(client: CtctClient, after: datetime) -> list[Campaign]:
    out: list[Campaign] = []
    path: str | None = "/emails"
    params = {"limit": "500", "after_date": format_time(after)}
    while path is not None:
        page = await client.call("GET", path, _campaigns.decode, params=params)
        out.extend(page.campaigns)
        path = page.links.next.href if page.links and page.links.next else None
        params = {}
    return out


async def observe_tracking(
    client: CtctClient, cfg: CtctConfig, resume: str | None, bound: datetime
) -> AsyncIterator[TrackingPage]:
    """Tracking pages since the marks in ``resume`` (everything if None), up to ``bound``."""
    if not cfg.tracking:
        return
    try:
        marks = dict(_cursor.decode(resume).marks) if resume else {}
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError("ctct tracking checkpoint", f"not a tracking token: {exc}") from exc

    def low() -> bool:
        if client.budget.remaining_today() < cfg.tracking_reserve:
            log.info("ctct.tracking_deferred", remaining=client.budget.remaining_today())
            return True
        return False

    if low():
        return
    campaigns = await _campaigns_since(client, bound - timedelta(days=cfg.tracking_after_days))
    for campaign in campaigns:
        if campaign.current_status in _UNSENT:
            continue
        if low():
            return
        try:
            detail = await client.call("GET", f"/emails/{campaign.campaign_id}", _detail.decode)
        except CtctRequestError as exc:
            if exc.status != 404:
                raise
            log.warning("ctct.campaign_gone", campaign_id=campaign.campaign_id)
            continue  # removed between the listing and now: nothing left to read
        name = campaign.name or detail.name
        for ca in detail.campaign_activities:
            if ca.role is not None and ca.role not in _TRACKED_ROLES:
                continue
            for report, kind in REPORTS:
                key = f"{ca.campaign_activity_id}/{kind}"
                walk = _Walk(ca.campaign_activity_id, report, kind, name, marks.get(key), bound)
                while not walk.done:
                    if low():
                        return
                    request = client.describe("GET", walk.path, walk.params)
                    page, digest = await client.call(
                        "GET", walk.path, _decode_records, params=walk.params
                    )
                    found, rejected, finished = walk.take(page)
                    if finished and walk.newest is not None:
                        marks[key] = walk.newest  # the walk is complete: now the mark moves
                    yield TrackingPage(
                        request=request,
                        activities=tuple(found),
                        rejected=tuple(rejected),
                        content_hash=digest,
                        resume=_encoder.encode(TrackingCursor(marks=marks)).decode(),
                    )


def _decode_records(body: bytes) -> tuple[TrackingRecordsPage, str]:
    """The page and the SHA-256 of its body (a cut-off body raises DecodeError: retried)."""
    return _records.decode(body), hashlib.sha256(body).hexdigest()


class _Walk:
    """One report of one campaign activity, read newest first down to the recorded mark."""

    def __init__(
        self,
        campaign_activity_id: str,
        report: str,
        kind: TrackingKind,
        name: str | None,
        mark: datetime | None,
        bound: datetime,
    ) -> None:
        self.path = f"/reports/email_reports/{campaign_activity_id}/tracking/{report}"
        self.params = {"limit": "500"}
        self.done = False
        self.newest = mark
        self._kind, self._name, self._mark, self._bound = kind, name, mark, bound

    def take(
        self, page: TrackingRecordsPage
    ) -> tuple[list[TrackingActivity], list[Rejected], bool]:
        """The page's new records, and whether the walk ended (else it moved to the next page)."""
        found: list[TrackingActivity] = []
        rejected: list[Rejected] = []
        reached = False
        for rec in page.tracking_activities:
            created = utc(rec.created_time)
            assert created is not None
            if created > self._bound:
                continue  # after this run's bound: the next run takes it
            if self._mark is not None and created < self._mark:
                reached = True  # newest first: the rest is already recorded
                break
            self.newest = created if self.newest is None else max(self.newest, created)
            out = _to_activity(rec, self._kind, self._name, created)
            if isinstance(out, Rejected):
                rejected.append(out)
            else:
                found.append(out)
        nxt = page.links.next.href if page.links and page.links.next else None
        if reached or nxt is None:
            self.done = True
        else:
            self.path, self.params = nxt, {}
        return found, rejected, self.done
