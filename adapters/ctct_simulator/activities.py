"""Bulk activities: queued, then processed in steps (initialized -> processing -> completed).

Progress is driven by the simulator itself, never by wall-clock time: a background worker
steps queued activities, every poll of GET /activities/{id} advances that activity by one step
(so any activity completes within a bounded number of polls), and ``drain()`` finishes them
all at once for tests.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.clock import iso_ms
from adapters.ctct_simulator.errors import ApiError
from adapters.ctct_simulator.imports import RowError, import_row

__all__ = ["MAX_QUEUED", "Activity", "ActivityKind", "ActivityQueue"]

MAX_QUEUED: Final = 1000
ActivityKind = Literal[
    "contacts_json_import",
    "add_list_memberships",
    "remove_list_memberships",
    "contact_delete",
    "list_delete",
]


class Activity:
    """One bulk job and its progress."""

    __slots__ = (
        "activity_id",
        "cannot_add",
        "completed_at",
        "created_at",
        "done",
        "errors",
        "items",
        "kind",
        "list_ids",
        "people",
        "started_at",
        "state",
        "updated_at",
    )

    def __init__(
        self, activity_id: str, kind: ActivityKind, items: list[Any], list_ids: list[str], now: int
    ) -> None:
        self.activity_id = activity_id
        self.kind = kind
        self.items = items
        self.list_ids = list_ids
        self.state = "initialized"
        self.created_at = self.updated_at = now
        self.started_at: int | None = None
        self.completed_at: int | None = None
        self.done = 0
        self.errors: list[str] = []
        self.cannot_add = 0
        self.people = 0

    @property
    def queued(self) -> bool:
        """Whether it still counts against the 1,000 queued activities."""
        return self.state in ("initialized", "processing")

    def render(self) -> dict[str, Any]:
        """The activity status object (``Activity`` and the per-kind POST shapes)."""
        total = len(self.items)
        out: dict[str, Any] = {
            "activity_id": self.activity_id,
            "state": self.state,
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at),
        }
        if self.started_at is not None:
            out["started_at"] = iso_ms(self.started_at)
        if self.completed_at is not None:
            out["completed_at"] = iso_ms(self.completed_at)
        out["percent_done"] = (
            100
            if total == 0 and self.state == "completed"
            else (self.done * 100 // total if total else 0)
        )
        out["activity_errors"] = list(self.errors)
        if self.kind == "contacts_json_import":
            out["source_file_name"] = "contacts_json_import"
            out["status"] = {
                "items_total_count": total,
                "person_count": self.people,
                "error_count": len(self.errors),
                "correctable_count": 0,
                "cannot_add_to_list_count": self.cannot_add,
            }
        elif self.kind != "list_delete":
            out["status"] = {
                "items_total_count": total,
                "items_completed_count": self.done,
                "list_count": len(self.list_ids),
            }
        out["_links"] = {"self": {"href": f"/v3/activities/{self.activity_id}"}}
        return out


class ActivityQueue:
    """All activities of the account, oldest first, and their processing."""

    def __init__(self, account: Account, chunk: int) -> None:
        self.account = account
        self.chunk = chunk
        self.by_id: dict[str, Activity] = {}

    def submit(self, kind: ActivityKind, items: list[Any], list_ids: list[str]) -> Activity:
        """Queue a job; 429 (single object) beyond 1,000 queued."""
        if sum(1 for a in self.by_id.values() if a.queued) >= MAX_QUEUED:
            err = ApiError(
                429, "throttled", "You exceeded 1,000 queued activities for this user account."
            )
            err.single_object = True
            raise err
        act = Activity(self.account.new_id(), kind, items, list_ids, self.account.clock.now_ms())
        self.by_id[act.activity_id] = act
        return act

    def pending(self) -> list[Activity]:
        """Queued activities, oldest first."""
        return [a for a in self.by_id.values() if a.queued]

    def step(self, act: Activity) -> None:
        """Advance one activity by up to ``chunk`` items."""
        if not act.queued:
            return
        now = self.account.clock.now_ms()
        if act.state == "initialized":
            act.state = "processing"
            act.started_at = now
        end = min(act.done + self.chunk, len(act.items))
        for i in range(act.done, end):
            self._item(act, act.items[i], i)
        act.done = end
        act.updated_at = self.account.clock.now_ms()
        if act.done >= len(act.items):
            act.state = "completed"
            act.completed_at = act.updated_at
            act.items = act.items if act.kind != "contacts_json_import" else [None] * len(act.items)

    def drain(self) -> int:
        """Finish every queued activity now; returns how many were finished."""
        finished = 0
        for act in self.pending():
            while act.queued:
                self.step(act)
            finished += 1
        return finished

    def _item(self, act: Activity, item: Any, i: int) -> None:
        account = self.account
        try:
            if act.kind == "contacts_json_import":
                outcome = import_row(account, item, act.list_ids, i + 1)
                act.people += 1
                if outcome == "cannot_add_to_list":
                    act.cannot_add += 1
            elif act.kind == "add_list_memberships":
                c = account.by_id.get(item)
                if c is None or c.deleted:
                    act.errors.append(f"contact {item}: not found")
                elif c.permission != "unsubscribed" or c.opt_out_source == "Account":
                    for list_id in act.list_ids:
                        if list_id in account.lists and account.lists[list_id].deleted_at is None:
                            account.join_list(item, list_id)
            elif act.kind == "remove_list_memberships":
                if item not in account.by_id:
                    act.errors.append(f"contact {item}: not found")
                else:
                    for list_id in act.list_ids:
                        account.leave_list(item, list_id)
            elif act.kind == "contact_delete":
                c = account.by_id.get(item)
                if c is None:
                    act.errors.append(f"contact {item}: not found")
                elif not c.deleted:
                    account.delete_contact(item)
            elif act.kind == "list_delete":
                account.delete_list(item)
        except RowError as exc:
            act.errors.append(str(exc))
        except ApiError as exc:
            act.errors.append(
                f"item {i + 1} ({item if isinstance(item, str) else 'row'}): {exc.message}"
            )
