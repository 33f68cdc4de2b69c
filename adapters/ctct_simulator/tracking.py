"""Campaigns and their tracking: sends, opens, clicks, forwards, opt-outs and bounces.

Records are kept per campaign activity in the order they happen and served newest first,
only those that have happened (a campaign's engagement is drawn when it is sent, for the
hours after); the paging cursor is a position in that order, so records that happen while a
client pages join after it and do not shift what it has still to read. An opt-out recorded
here also unsubscribes the contact (``opt_out_source`` Contact, with the reason), as a
campaign footer does.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from typing import Any, Final

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.clock import date_only, iso_ms
from adapters.ctct_simulator.contact import Contact

__all__ = ["KINDS", "Campaign", "Tracking", "TrackingRecord"]

# URL path segment -> tracking_activity_type
KINDS: Final = {
    "sends": "em_sends",
    "opens": "em_opens",
    "clicks": "em_clicks",
    "forwards": "em_forwards",
    "optouts": "em_optouts",
    "bounces": "em_bounces",
}
BOUNCE_CODES: Final = ("B", "D", "F", "S", "V", "X", "Z")
DEVICES: Final = ("computer", "mobile", "tablet")
LINKS: Final = (
    "https://example.org/news",
    "https://example.org/donate",
    "https://example.org/events",
)
OPT_OUT_REASONS: Final = ("too many emails", "no longer interested", "never signed up", "")
_HOUR: Final = 3600 * 1000


class TrackingRecord:
    """One tracking event of one contact in one campaign activity."""

    __slots__ = ("activity_id", "contact_id", "created", "extra", "kind")

    def __init__(
        self,
        activity_id: str,
        contact_id: str,
        kind: str,
        created: int,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.activity_id = activity_id
        self.contact_id = contact_id
        self.kind = kind
        self.created = created
        self.extra = extra or {}


class Campaign:
    """An email campaign with its primary_email and permalink campaign activities."""

    __slots__ = ("activities", "campaign_id", "created_at", "name", "status", "updated_at")

    def __init__(
        self, campaign_id: str, name: str, now: int, activities: list[tuple[str, str]]
    ) -> None:
        self.campaign_id = campaign_id
        self.name = name
        self.status = "Done"
        self.created_at = self.updated_at = now
        self.activities = activities  # (campaign_activity_id, role)

    def summary(self) -> dict[str, Any]:
        """The ``EmailCampaigns`` item of GET /emails."""
        return {
            "campaign_id": self.campaign_id,
            "name": self.name,
            "current_status": self.status,
            "type": "NEWSLETTER",
            "type_code": 10,
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at),
        }

    def detail(self) -> dict[str, Any]:
        """The ``EmailCampaign`` of GET /emails/{id}."""
        out = self.summary()
        out["campaign_activities"] = [
            {"campaign_activity_id": aid, "role": role} for aid, role in self.activities
        ]
        return out


class Tracking:
    """All campaigns and tracking records of the account."""

    def __init__(self, account: Account, seed: int) -> None:
        self.account = account
        self._rng = random.Random(f"tracking:{seed}")
        self.campaigns = account.campaigns  # one dict: sim.account.campaigns reads it too
        self.activity_names: dict[str, str] = {}  # campaign_activity_id -> campaign name
        self.activity_campaigns: dict[str, str] = {}  # campaign_activity_id -> campaign_id
        self.records: dict[str, dict[str, list[TrackingRecord]]] = {}  # activity -> kind -> list
        self.by_contact: dict[str, list[TrackingRecord]] = {}
        # Footer unsubscribes a campaign's engagement scheduled for later: (at, seq, contact id,
        # reason), applied to the contact when the clock reaches them (``settle``).
        self._optouts_due: list[tuple[int, int, str, str]] = []
        self._due_seq = itertools.count()

    def seed_campaigns(self, count: int, audience: int) -> None:
        """Campaigns sent over the last weeks, one a week, to part of the account."""
        now = self.account.clock.now_ms()
        for i in range(count):
            sent_at = now - (count - i) * 7 * 24 * _HOUR
            self.send_campaign(f"Newsletter {i + 1}", audience, at=sent_at, until=now)

    def _add(self, rec: TrackingRecord) -> None:
        # Kept in time order, as the reports serve them (newest first): a record made now
        # goes before those a campaign's engagement has scheduled for later.
        records = self.records[rec.activity_id][rec.kind]
        if records and records[-1].created > rec.created:
            bisect.insort(records, rec, key=lambda r: r.created)
        else:
            records.append(rec)
        self.by_contact.setdefault(rec.contact_id, []).append(rec)

    def send_campaign(
        self, name: str, audience: int, *, at: int | None = None, until: int | None = None
    ) -> Campaign:
        """Send a campaign to up to ``audience`` subscribed contacts, with its engagement."""
        account = self.account
        now = account.clock.now_ms() if at is None else at
        until = now + 6 * _HOUR if until is None else until
        primary, permalink = account.new_id(), account.new_id()
        camp = Campaign(
            account.new_id(), name, now, [(primary, "primary_email"), (permalink, "permalink")]
        )
        self.campaigns[camp.campaign_id] = camp
        self.activity_names[primary] = name
        self.activity_campaigns[primary] = camp.campaign_id
        self.records[primary] = {kind: [] for kind in KINDS.values()}
        rng = self._rng
        contacts = account.contacts
        if not contacts:
            return camp
        start = rng.randrange(len(contacts))
        sent: list[Contact] = []
        for k in range(len(contacts)):
            c = contacts[(start + k) % len(contacts)]
            if c.deleted_at is None and c.permission in ("explicit", "implicit"):
                sent.append(c)
                if len(sent) >= audience:
                    break
        sent.sort(key=lambda c: c.seq)
        span = max(until - now, 1)
        first = now - len(sent)
        for j, c in enumerate(sent):
            # Sends go out a millisecond apart, in order, and all before ``now``: the send
            # list is final when the campaign is, so a later opt-out (which is stamped at or
            # after ``now``) can never precede a send to the same contact.
            t = first + j
            self._add(TrackingRecord(primary, c.contact_id, "em_sends", t))
            r = rng.random()
            if r < 0.03:
                self._add(
                    TrackingRecord(
                        primary,
                        c.contact_id,
                        "em_bounces",
                        t + 1000,
                        {"bounce_code": BOUNCE_CODES[rng.randrange(7)]},
                    )
                )
                continue
            if r < 0.40:
                t_open = now + int(rng.random() * span * 0.5)
                self._add(
                    TrackingRecord(
                        primary,
                        c.contact_id,
                        "em_opens",
                        t_open,
                        {"device_type": DEVICES[rng.randrange(3)]},
                    )
                )
                if rng.random() < 0.35:
                    url = rng.randrange(len(LINKS))
                    self._add(
                        TrackingRecord(
                            primary,
                            c.contact_id,
                            "em_clicks",
                            t_open + 30_000,
                            {
                                "device_type": DEVICES[rng.randrange(3)],
                                "url_id": str(url + 1),
                                "link_url": LINKS[url],
                            },
                        )
                    )
                if rng.random() < 0.03:
                    self._add(TrackingRecord(primary, c.contact_id, "em_forwards", t_open + 60_000))
                if rng.random() < 0.04:
                    reason = OPT_OUT_REASONS[rng.randrange(len(OPT_OUT_REASONS))]
                    self.record_optout(primary, c, t_open + 90_000, reason)
        for kind_list in self.records[primary].values():
            kind_list.sort(key=lambda rec: rec.created)
        camp.updated_at = max(now, min(until, account.clock.now_ms()))
        return camp

    def settle(self) -> int:
        """Apply the scheduled opt-outs whose time has come (every request does this first);
        returns how many. A contact deleted meanwhile is left deleted."""
        due, now, done = self._optouts_due, self.account.clock.now_ms(), 0
        while due and due[0][0] <= now:
            at, _, contact_id, reason = heapq.heappop(due)
            c = self.account.by_id.get(contact_id)
            if c is not None and c.deleted_at is None:
                self.account.opt_out(c, reason=reason or None, source="Contact", at=at)
            done += 1
        return done

    def record_optout(self, activity_id: str, c: Contact, at: int, reason: str) -> None:
        """A footer unsubscribe at ``at``: its tracking record, and the contact's opt-out now
        if ``at`` has passed, else when the clock gets there (``settle``). (Applied at once, a
        recipient who opts out an hour after a campaign is sent would be listed unsubscribed,
        dated in the future, before she opened it.)"""
        self._add(
            TrackingRecord(activity_id, c.contact_id, "em_optouts", at, {"opt_out_reason": reason})
        )
        if at <= self.account.clock.now_ms():
            self.account.opt_out(c, reason=reason or None, source="Contact", at=at)
        else:
            heapq.heappush(self._optouts_due, (at, next(self._due_seq), c.contact_id, reason))

    def record(
        self, activity_id: str, c: Contact, kind: str, extra: dict[str, str] | None = None
    ) -> None:
        """Record one event now (the living world uses this)."""
        self._add(
            TrackingRecord(activity_id, c.contact_id, kind, self.account.clock.now_ms(), extra)
        )

    def happened(self, activity_id: str, kind: str) -> int:
        """How many of one report's records (``records[activity_id][kind]``, oldest first)
        have happened by now: they are the first so many."""
        records = self.records[activity_id][kind]
        now = self.account.clock.now_ms()
        return bisect.bisect_right(records, now, key=lambda r: r.created)

    def stats(self, activity_id: str) -> dict[str, int]:
        """The ``StatsEmailActivity`` of a tracked campaign activity, counted from its records
        now (Constant Contact refreshes its own now and then): unique recipients, and for
        opens and clicks also every event (``*_all``), as the reports list them."""
        by_kind = {
            kind: records[: self.happened(activity_id, kind)]
            for kind, records in self.records[activity_id].items()
        }

        def unique(kind: str) -> int:
            return len({r.contact_id for r in by_kind[kind]})

        sends, opens, bounces = len(by_kind["em_sends"]), unique("em_opens"), unique("em_bounces")
        return {
            "em_sends": sends,
            "em_opens": opens,
            "em_opens_all": len(by_kind["em_opens"]),
            "em_clicks": unique("em_clicks"),
            "em_clicks_all": len(by_kind["em_clicks"]),
            "em_bounces": bounces,
            "em_forwards": unique("em_forwards"),
            "em_optouts": unique("em_optouts"),
            "em_abuse": 0,
            "em_not_opened": max(sends - opens - bounces, 0),
        }

    def render(self, rec: TrackingRecord, *, report: bool, names: bool = True) -> dict[str, Any]:
        """A record as a campaign report row (``report``) or a contact activity_details row."""
        out: dict[str, Any] = {
            "contact_id": rec.contact_id,
            "campaign_activity_id": rec.activity_id,
            "tracking_activity_type": rec.kind,
            "created_time": iso_ms(rec.created),
        }
        if not report:
            if names:
                out["campaign_activity_name"] = self.activity_names.get(rec.activity_id, "")
            return out
        c = self.account.by_id.get(rec.contact_id)
        if c is not None:
            out["email_address"] = c.email
            if c.first_name is not None:
                out["first_name"] = c.first_name
            if c.last_name is not None:
                out["last_name"] = c.last_name
            if c.deleted_at is not None:
                out["deleted_at"] = date_only(c.deleted_at)
            if rec.kind == "em_bounces":
                out["current_email_address"] = c.email
        out.update(rec.extra)
        return out
