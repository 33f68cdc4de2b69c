"""The living account: deterministic random changes, one event at a time.

Subscribers unsubscribe from a campaign footer, edit their profiles, join and leave lists and
sign up; the account owner edits and deletes contacts in the product; campaigns are sent and
opened. What moves which timestamp follows Constant Contact's sync guide: profile and list
changes move ``updated_at``; an unsubscribe moves only the email address's timestamps.
"""

from __future__ import annotations

import random
from typing import Final

import msgspec

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.contact import Contact
from adapters.ctct_simulator.errors import ApiError
from adapters.ctct_simulator.seed import FIRST, LAST, TITLES
from adapters.ctct_simulator.tracking import DEVICES, OPT_OUT_REASONS, Tracking

__all__ = ["KINDS", "World", "WorldEvent"]

# (event kind, weight)
_EVENTS: Final = (
    ("unsubscribe", 14),
    ("contact_edit", 14),
    ("account_edit", 14),
    ("join_list", 14),
    ("leave_list", 10),
    ("sign_up", 10),
    ("delete", 3),
    ("open", 14),
    ("campaign", 2),
)
KINDS: Final = tuple(k for k, _ in _EVENTS)


class WorldEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What one step did (for assertions and the admin API)."""

    kind: str
    contact_id: str | None = None
    detail: str | None = None


class World:
    """Changes the account as its subscribers and owner would."""

    def __init__(
        self, account: Account, tracking: Tracking, seed: int, audience: int = 500
    ) -> None:
        self.account = account
        self.tracking = tracking
        self.audience = audience
        self._rng = random.Random(f"world:{seed}")
        self.steps = 0

    def _pick(self) -> Contact | None:
        contacts = self.account.contacts
        for _ in range(20):
            if not contacts:
                return None
            c = contacts[self._rng.randrange(len(contacts))]
            if c.deleted_at is None:
                return c
        return None

    def step(self, n: int = 1, kinds: tuple[str, ...] | None = None) -> list[WorldEvent]:
        """Make ``n`` changes; the same seed and history give the same changes.

        ``kinds`` limits them to those kinds of event (in their usual proportions), so that a
        caller can pace campaigns apart from everything else."""
        self.tracking.settle()
        if kinds is not None:
            unknown = sorted(set(kinds) - set(KINDS))
            if unknown or not kinds:
                raise ValueError(
                    f"kinds: unknown kind {', '.join(unknown)}" if unknown else "kinds: empty"
                )
        pool = [k for k, _ in _EVENTS if kinds is None or k in kinds]
        weights = [w for k, w in _EVENTS if kinds is None or k in kinds]
        out: list[WorldEvent] = []
        for _ in range(n):
            kind = self._rng.choices(pool, weights)[0]
            try:
                event = self._one(kind)
            except ApiError as exc:  # e.g. a 50-list contact: the change simply does not happen
                event = WorldEvent(kind="skipped", detail=f"{kind}: {exc.message}")
            self.steps += 1
            if event is not None:
                out.append(event)
        return out

    def _one(self, kind: str) -> WorldEvent | None:
        rng, account = self._rng, self.account
        if kind == "sign_up":
            first, last = FIRST[rng.randrange(len(FIRST))], LAST[rng.randrange(len(LAST))]
            address = f"{first.lower()}.{last.lower()}.w{self.steps}@signup.example"
            if account.find_email(address) is not None:
                return None
            new = account.add_contact(address, source="Contact", permission="explicit")
            new.first_name, new.last_name = first, last
            open_lists = [x.list_id for x in account.lists.values() if x.deleted_at is None]
            if open_lists:
                new.lists = (open_lists[rng.randrange(len(open_lists))],)
            account.commit(new, "Contact")
            return WorldEvent(kind=kind, contact_id=new.contact_id)
        if kind == "campaign":
            camp = self.tracking.send_campaign(f"Campaign w{self.steps}", self.audience)
            return WorldEvent(kind=kind, detail=camp.campaign_id)
        c = self._pick()
        if c is None:
            return None
        if kind == "unsubscribe":
            if c.permission == "unsubscribed":
                return None
            activity = self._latest_activity()
            reason = OPT_OUT_REASONS[rng.randrange(len(OPT_OUT_REASONS))]
            if activity is not None:
                self.tracking.record_optout(activity, c, account.stamp(), reason)
            else:
                account.opt_out(c, reason=reason or None, source="Contact")
            return WorldEvent(kind=kind, contact_id=c.contact_id, detail=reason)
        if kind in ("contact_edit", "account_edit"):
            source = "Contact" if kind == "contact_edit" else "Account"
            if rng.random() < 0.5:
                account.edit_contact(
                    c.contact_id, source=source, job_title=TITLES[rng.randrange(len(TITLES))]
                )
            else:
                account.edit_contact(
                    c.contact_id, source=source, last_name=LAST[rng.randrange(len(LAST))]
                )
            return WorldEvent(kind=kind, contact_id=c.contact_id)
        if kind == "join_list":
            live = [x.list_id for x in account.lists.values() if x.deleted_at is None]
            if not live or c.permission == "unsubscribed":
                return None
            list_id = live[rng.randrange(len(live))]
            if account.join_list(c.contact_id, list_id, source="Contact"):
                return WorldEvent(kind=kind, contact_id=c.contact_id, detail=list_id)
            return None
        if kind == "leave_list":
            if not c.lists:
                return None
            list_id = c.lists[rng.randrange(len(c.lists))]
            account.leave_list(c.contact_id, list_id, source="Contact")
            return WorldEvent(kind=kind, contact_id=c.contact_id, detail=list_id)
        if kind == "delete":
            account.delete_contact(c.contact_id)
            return WorldEvent(kind=kind, contact_id=c.contact_id)
        # "open": a recipient of the latest campaign opens it (late opens keep arriving)
        activity = self._latest_activity()
        if activity is None:
            return None
        sends = self.tracking.records[activity]["em_sends"]
        if not sends:
            return None
        reader = account.by_id[sends[rng.randrange(len(sends))].contact_id]
        if reader.deleted_at is not None:
            return None
        self.tracking.record(
            activity, reader, "em_opens", {"device_type": DEVICES[rng.randrange(3)]}
        )
        return WorldEvent(kind=kind, contact_id=reader.contact_id, detail=activity)

    def _latest_activity(self) -> str | None:
        if not self.tracking.campaigns:
            return None
        camp = list(self.tracking.campaigns.values())[-1]
        return camp.activities[0][0]
