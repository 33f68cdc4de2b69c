"""Campaign tracking: per campaign activity, six reports read newest first down to what we have,
each only when there can be something new in it.

The v3 reports have no date filter (pitfall 16), so the resume token keeps, per campaign
activity and kind, the newest ``created_time`` already recorded; a walk stops at the first
older record. A walk's mark moves only when the walk ends, so a crash mid-walk re-reads from the
top (repeats are harmless: the engine's event ids are content-derived) and never skips. Times
past the run's ``bound`` are left for the next run. Tracking is optional work: when the day's
budget runs below ``tracking_reserve`` it stops and leaves the rest to a later run, so contact
sync never starves.

Reading every report of every campaign of the last ``tracking_after_days`` at every run costs
seven requests per campaign per run (its detail and six reports): 26 campaigns at a 15-minute
interval spend 17,500 requests a day, more than a key's 10,000. So a run reads, besides the
campaign listing, Constant Contact's counts for ten campaign activities a request
(``/reports/stats/email_campaign_activities``) and walks only the reports whose count moved
since their last walk began, or that have not been walked for about ``tracking_recheck`` (the
counts of forwards and bounces are per reader: a second one by the same reader does not move
them; the rechecks of reports first read together are spread over a quarter of it).
A campaign's activities are read once, and again when its ``updated_at`` moves (a resend) or
``tracking_recheck`` has passed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

import msgspec
import structlog

from engine.errors import ConfigError
from engine.model import TrackingActivity, TrackingKind, is_valid_email, normalise_email
from engine.ports import Rejected, TrackingPage

from .client import CtctClient, CtctRequestError
from .config import CtctConfig
from .normalise import utc
from .paging import format_time
from .schema import (
    ActivityStats,
    ActivityStatsPage,
    Campaign,
    CampaignDetail,
    CampaignsPage,
    TrackingRecord,
    TrackingRecordsPage,
)

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


# The count of the stats report that a new record of each report moves.
_COUNTED: Final[Mapping[TrackingKind, str]] = {
    "send": "em_sends",
    "open": "em_opens_all",
    "click": "em_clicks_all",
    "bounce": "em_bounces",
    "forward": "em_forwards",
    "optout": "em_optouts",
}
_STATS_IDS: Final = 10  # campaign activities per stats request (the API's maximum)
_stats: Final = msgspec.json.Decoder(ActivityStatsPage)


class ReportMark(msgspec.Struct, frozen=True, array_like=True):
    """One report of one campaign activity, as its last complete walk left it."""

    newest: datetime | None = None  # the newest record's time: the next walk stops below it
    count: int | None = None  # the stats count read before that walk (None: none given)
    walked: datetime | None = None  # the bound of the run that walked it


class CampaignMemo(msgspec.Struct, frozen=True, array_like=True):
    """A campaign's name and tracked activities, as of its ``updated_at``, read at ``read``
    (the bound of that run)."""

    updated_at: datetime | None
    name: str | None
    activities: list[str]
    read: datetime | None = None


# A mark and a memo as version 3 writes them: their fields in order, times in microseconds
# since 1970 (lossless).
_Mark3 = tuple[int | None, int | None, int | None]
_Memo3 = tuple[int | None, str | None, list[str], int | None]


class TrackingCursor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The tracking token, every version of it. Read, it stands as ``reports`` (per
    ``"<campaign_activity_id>/<kind>"`` its mark) and ``campaigns`` (what each detail said).
    Written, it is version 3: ``r``, per campaign activity its six marks in ``REPORTS`` order
    (null: not walked), and ``c``, the memos, in integers: it is recorded with the log's
    checkpoints, and version 2 (``reports`` and ``campaigns`` themselves: a key and three ISO
    times a report) was 2.2 times the size. Version 1 had only ``marks``, each report's newest
    time."""

    v: int = 2
    reports: dict[str, ReportMark] = {}
    campaigns: dict[str, CampaignMemo] = {}
    marks: dict[str, datetime] = {}
    r: dict[str, list[_Mark3 | None]] = {}
    c: dict[str, _Memo3] = {}


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_KIND_AT: Final[dict[str, int]] = {kind: i for i, (_, kind) in enumerate(REPORTS)}


def _us(t: datetime | None) -> int | None:
    return None if t is None else (t - _EPOCH) // _US


def _at(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _US


def _token(reports: Mapping[str, ReportMark], campaigns: Mapping[str, CampaignMemo]) -> str:
    """The token, version 3."""
    r: dict[str, list[_Mark3 | None]] = {}
    for key, m in reports.items():
        activity, _, kind = key.rpartition("/")
        marks = r.setdefault(activity, [None] * len(REPORTS))
        marks[_KIND_AT[kind]] = (_us(m.newest), m.count, _us(m.walked))
    c = {k: (_us(m.updated_at), m.name, m.activities, _us(m.read)) for k, m in campaigns.items()}
    return _encoder.encode(TrackingCursor(v=3, r=r, c=c)).decode()


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


class _Read(NamedTuple):
    """A request whose answer changed the token: recorded as a page of its own, so that the
    token is kept even when no report is walked after it."""

    request: str
    content_hash: str


async def _campaign(
    client: CtctClient,
    campaign: Campaign,
    memo: CampaignMemo | None,
    bound: datetime,
    recheck: timedelta,
) -> tuple[CampaignMemo | None, _Read | None]:
    """The campaign's tracked activities: from ``memo`` while its ``updated_at`` stays and it
    is younger than about ``recheck`` (whether a resend moves ``updated_at`` is not
    documented), else from GET /emails/{id}, with that request (None: it was removed since
    the listing)."""
    if (
        memo is not None
        and memo.read is not None
        and bound - memo.read < recheck - _early(campaign.campaign_id, recheck)
        and campaign.updated_at is not None
        and memo.updated_at == campaign.updated_at
    ):
        return memo, None
    path = f"/emails/{campaign.campaign_id}"
    try:
        detail, digest = await client.call("GET", path, _decode_detail)
    except CtctRequestError as exc:
        if exc.status != 404:
            raise
        log.warning("ctct.campaign_gone", campaign_id=campaign.campaign_id)
        return None, None  # removed between the listing and now: nothing left to read
    tracked = [
        ca.campaign_activity_id
        for ca in detail.campaign_activities
        if ca.role is None or ca.role in _TRACKED_ROLES
    ]
    memo = CampaignMemo(campaign.updated_at, campaign.name or detail.name, tracked, bound)
    return memo, _Read(client.describe("GET", path), digest)


async def _counts(client: CtctClient, activity_ids: list[str]) -> dict[str, ActivityStats]:
    """Constant Contact's counts per campaign activity; one it gives none for is absent (its
    reports are all walked)."""
    out: dict[str, ActivityStats] = {}
    for i in range(0, len(activity_ids), _STATS_IDS):
        chunk = activity_ids[i : i + _STATS_IDS]
        path = f"/reports/stats/email_campaign_activities/{','.join(chunk)}"
        try:
            page = await client.call("GET", path, _stats.decode)
        except CtctRequestError as exc:
            if exc.status != 404:
                raise
            log.warning("ctct.tracking_counts_refused", campaign_activity_ids=chunk)
            continue
        out |= {r.campaign_activity_id: r.stats for r in page.results}
    return out


def _read_cursor(resume: str | None) -> TrackingCursor:
    if not resume:
        return TrackingCursor()
    try:
        cursor = _cursor.decode(resume)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError("ctct tracking checkpoint", f"not a tracking token: {exc}") from exc
    if cursor.v >= 3:
        try:
            reports = {
                f"{activity}/{REPORTS[i][1]}": ReportMark(_at(m[0]), m[1], _at(m[2]))
                for activity, marks in cursor.r.items()
                for i, m in enumerate(marks[: len(REPORTS)])
                if m is not None
            }
            campaigns = {
                k: CampaignMemo(_at(m[0]), m[1], m[2], _at(m[3])) for k, m in cursor.c.items()
            }
        except (OverflowError, ValueError) as exc:
            raise ConfigError("ctct tracking checkpoint", f"a time out of range: {exc}") from exc
        return TrackingCursor(reports=reports, campaigns=campaigns)
    if cursor.marks:  # version 1: every report walked when it was last read
        old = {k: ReportMark(newest=t) for k, t in cursor.marks.items()}
        cursor = msgspec.structs.replace(cursor, reports=old | cursor.reports, marks={})
    return cursor


# Pages between two moves of the token (see ``observe_tracking``).
TOKEN_EVERY: Final = 20


async def observe_tracking(
    client: CtctClient, cfg: CtctConfig, resume: str | None, bound: datetime
) -> AsyncIterator[TrackingPage]:
    """Tracking pages since the marks in ``resume`` (everything if None), up to ``bound``.

    The token holds a mark for every report of every campaign in the window, and the engine
    records it with each page that moves it: moved by every walk, it was a few times the size
    of everything else a daemon's cycle records. It moves with the run's last page, and every
    ``TOKEN_EVERY`` pages of a long run; the pages between carry the token as it stood. A run
    cut short reads again what it read since its token last moved (a tracking record is
    recorded once, whatever reads it twice), never less."""
    if not cfg.tracking:
        return
    stood = resume or _token({}, {})
    held: _Page | None = None
    since = 0  # pages since the token last moved
    async for item in _pages(client, cfg, resume, bound):
        if held is not None:
            since += 1
            if since >= TOKEN_EVERY:
                stood, since = _token(held.reports, held.memos), 0
            yield msgspec.structs.replace(held.page, resume=stood)
        held = item
    if held is not None:
        yield msgspec.structs.replace(held.page, resume=_token(held.reports, held.memos))


class _Page(NamedTuple):
    """A page (its token not yet written: most are never) and where tracking stands after
    it: the marks (a copy, taken when one moved) and the campaigns' memos."""

    page: TrackingPage
    reports: Mapping[str, ReportMark]
    memos: Mapping[str, CampaignMemo]


async def _pages(
    client: CtctClient, cfg: CtctConfig, resume: str | None, bound: datetime
) -> AsyncIterator[_Page]:
    """Tracking pages, each with where tracking stands after it."""
    cursor = _read_cursor(resume)

    def low() -> bool:
        if client.budget.remaining_today() < cfg.tracking_reserve:
            log.info("ctct.tracking_deferred", remaining=client.budget.remaining_today())
            return True
        return False

    if low():
        return
    campaigns = await _campaigns_since(client, bound - timedelta(days=cfg.tracking_after_days))
    memos: dict[str, CampaignMemo] = {}
    details: list[_Read] = []
    for campaign in campaigns:
        if campaign.current_status in _UNSENT:
            continue
        if low():
            return
        memo = cursor.campaigns.get(campaign.campaign_id)
        memo, read = await _campaign(client, campaign, memo, bound, cfg.tracking_recheck)
        if memo is not None:
            memos[campaign.campaign_id] = memo
        if read is not None:
            details.append(read)
    activities = [a for memo in memos.values() for a in memo.activities]
    if low():
        return
    counts = await _counts(client, activities) if cfg.tracking_recheck else {}
    # Marks of campaigns no longer listed (older than the window, or deleted) are dropped.
    wanted = {f"{a}/{kind}" for a in activities for _, kind in REPORTS}
    reports = {k: m for k, m in cursor.reports.items() if k in wanted}
    # The details read, as pages without activity: a detail read again (daily) must be kept
    # even in a run that walks no report, or it would be read again at every run.
    stands = dict(reports)
    for read in details:
        detail = TrackingPage(
            request=read.request, activities=(), content_hash=read.content_hash, resume=""
        )
        yield _Page(detail, stands, memos)
    for memo in memos.values():
        for activity in memo.activities:
            stats = counts.get(activity)
            for report, kind in REPORTS:
                key = f"{activity}/{kind}"
                mark = reports.get(key, ReportMark())
                count = None if stats is None else getattr(stats, _COUNTED[kind])
                if not _due(key, mark, count, bound, cfg.tracking_recheck):
                    continue
                walk = _Walk(activity, report, kind, memo.name, mark.newest, bound)
                while not walk.done:
                    if low():
                        return
                    request = client.describe("GET", walk.path, walk.params)
                    page, digest = await client.call(
                        "GET", walk.path, _decode_records, params=walk.params
                    )
                    found, rejected, finished = walk.take(page)
                    if finished:  # the walk is complete: now the mark moves
                        reports[key] = ReportMark(walk.newest, count, bound)
                        stands = dict(reports)
                    records = TrackingPage(
                        request=request,
                        activities=tuple(found),
                        rejected=tuple(rejected),
                        content_hash=digest,
                        resume="",
                    )
                    yield _Page(records, stands, memos)


def _due(
    key: str, mark: ReportMark, count: int | None, bound: datetime, recheck: timedelta
) -> bool:
    """Whether a report may hold records its last walk did not: never walked; no count to
    tell; its count moved since; or not walked for about ``recheck``."""
    if mark.walked is None or count is None or count != mark.count:
        return True
    return bound - mark.walked >= recheck - _early(key, recheck)


def _early(key: str, recheck: timedelta) -> timedelta:
    """How much sooner than ``recheck`` this report (or campaign) is read again: a fixed part
    of up to a quarter of it, from its key. Those first read in one run (all of them, at a
    first run) then come due again over hours, not all in one cycle."""
    return recheck * _part(key) / 4


@functools.lru_cache(maxsize=8192)
def _part(key: str) -> float:
    """A fixed fraction from ``key`` (each report is checked at every run: hashed once)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") / 2**32


def _decode_detail(body: bytes) -> tuple[CampaignDetail, str]:
    """The campaign and the SHA-256 of its body."""
    return _detail.decode(body), hashlib.sha256(body).hexdigest()


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
