"""The reconciler: a pure function from both stores' projected state and the policy to commands.

For each pair of contacts (one per store, paired by a recorded link or by normalised email) it
decides, in this order:

1. Opt-out wins, always, both ways. Unsubscribed in one store means unsubscribed in the other.
   The one exception is the contact's own action: a Constant Contact opt-in with source
   ``Contact`` newer than the other store's opt-out (their confirmation of a re-subscribe
   request) is left standing; the engine still never re-subscribes the other store and records
   that as a blocked decision. The engine never subscribes anyone, never adds an opted-out
   contact to a list, and never creates an opted-out app contact in Constant Contact.
2. Deletions propagate only where the policy says; otherwise a deleted side is left alone
   (no profile or list writes would revive it).
3. Missing contacts are created in the other store when the policy allows.
4. Profile fields and the email address follow their source of record; list memberships follow
   the source of record of each mapped list pair, except an opted-out contact's, which are left
   as they are in both stores (a recorded ``decision.blocked``: an add would break consent, and
   a removal might only copy an absence ccsync itself made, creating the contact without its
   lists).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

import msgspec

from engine.commands import (
    AddToList,
    Command,
    DeleteContact,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
)
from engine.events import DecisionBlocked, IdentityLinked
from engine.model import SUBSCRIBED, Store
from engine.policy import Policy
from projections.contacts import ContactState

__all__ = ["Decisions", "Pair", "reconcile", "reconcile_pair"]


class Pair(msgspec.Struct, frozen=True, kw_only=True):
    """One person's state in both stores (either side may be missing)."""

    email: str
    ctct: ContactState | None = None
    app: ContactState | None = None
    linked: bool = False


class Decisions(msgspec.Struct, kw_only=True):
    commands: list[Command] = msgspec.field(default_factory=list)
    blocked: list[DecisionBlocked] = msgspec.field(default_factory=list)
    links: list[IdentityLinked] = msgspec.field(default_factory=list)


def _alive(s: ContactState | None) -> bool:
    return s is not None and not s.deleted


def _unsubscribed(s: ContactState | None) -> bool:
    return s is not None and s.permission.status == "unsubscribed"


def _own_resubscribe(ctct: ContactState, app: ContactState) -> bool:
    """The contact re-subscribed themselves in Constant Contact after the app's opt-out."""
    p, q = ctct.permission, app.permission
    return (
        p.status in SUBSCRIBED
        and p.source == "Contact"
        and p.changed_at is not None
        and q.changed_at is not None
        and p.changed_at > q.changed_at
    )


def _block(
    email: str, store: Store, key: str, action: str, reason: str, basis: int
) -> DecisionBlocked:
    return DecisionBlocked(
        basis=basis, store="engine", key=f"{store}:{key}", email=email, action=action, reason=reason
    )


def reconcile(pairs: Iterable[Pair], policy: Policy) -> Decisions:
    """Decide for every pair; the result's order is deterministic in the input order."""
    out = Decisions()
    for pair in pairs:
        reconcile_pair(pair, policy, out)
    return out


def reconcile_pair(pair: Pair, policy: Policy, out: Decisions) -> None:
    c, a = pair.ctct, pair.app
    if c is not None and a is not None and not pair.linked:
        out.links.append(
            IdentityLinked(store="ctct", key=c.store_id, app_id=a.store_id, email=c.email)
        )
    _consent(pair, out)
    if c is not None and a is not None:
        if c.deleted or a.deleted:
            _deletions(c, a, policy, out)
        else:
            _profile(c, a, policy, out)
            _lists(c, a, policy, out)
    elif a is not None and c is None:
        _create_in_ctct(a, policy, out)
    elif c is not None and a is None:
        _create_in_app(c, policy, out)


def _consent(pair: Pair, out: Decisions) -> None:
    c, a = pair.ctct, pair.app
    if c is None or a is None:
        return
    if _unsubscribed(c) and not _unsubscribed(a) and _alive(a):
        if (
            a.permission.status in SUBSCRIBED
            and a.permission.changed_at
            and c.permission.changed_at
            and a.permission.changed_at > c.permission.changed_at
        ):
            out.blocked.append(
                _block(
                    c.email,
                    "ctct",
                    c.store_id,
                    "resubscribe",
                    "the app subscribed a contact who opted out in Constant Contact; only the "
                    "contact can opt back in (Constant Contact's confirmation flow)",
                    max(a.position, c.position),
                )
            )
        out.commands.append(_unsubscribe("app", a, c))
    elif _unsubscribed(a) and not _unsubscribed(c) and _alive(c):
        if _own_resubscribe(c, a):
            out.blocked.append(
                _block(
                    a.email,
                    "app",
                    a.store_id,
                    "resubscribe",
                    "the contact opted back in through Constant Contact after opting out in "
                    "the app; ccsync never re-subscribes anyone: update the app by hand if "
                    "the app should follow",
                    max(a.position, c.position),
                )
            )
        else:
            out.commands.append(_unsubscribe("ctct", c, a))


def _unsubscribe(target: Store, dst: ContactState, src: ContactState) -> Unsubscribe:
    return Unsubscribe(
        target=target,
        email=dst.email,
        store_id=dst.store_id,
        basis=dst.position,
        reason=src.permission.reason,
        source=src.permission.source or ("Contact" if src.store == "ctct" else "Account"),
        opted_out_at=src.permission.changed_at,
    )


def _deletions(c: ContactState, a: ContactState, policy: Policy, out: Decisions) -> None:
    if c.deleted and not a.deleted and policy.delete_ctct_to_app:
        out.commands.append(
            DeleteContact(target="app", email=a.email, store_id=a.store_id, basis=a.position)
        )
    elif a.deleted and not c.deleted and policy.delete_app_to_ctct:
        out.commands.append(
            DeleteContact(target="ctct", email=c.email, store_id=c.store_id, basis=c.position)
        )


def _profile(c: ContactState, a: ContactState, policy: Policy, out: Decisions) -> None:
    by_target: dict[Store, dict[str, str | None]] = {"ctct": {}, "app": {}}
    for f in policy.fields:
        src_store = policy.source_for(f)
        src, dst = (c, a) if src_store == "ctct" else (a, c)
        want = src.fields.get(f) or None
        if want != (dst.fields.get(f) or None):
            by_target[dst.store][f] = want
    email_src = policy.source_for("email")
    new_email: dict[Store, str] = {}
    if c.email != a.email:
        src, dst = (c, a) if email_src == "ctct" else (a, c)
        new_email[dst.store] = src.email
    for dst in (c, a):
        fields = by_target[dst.store]
        if fields or dst.store in new_email:
            out.commands.append(
                UpsertContact(
                    target=dst.store,
                    email=dst.email,
                    store_id=dst.store_id,
                    basis=dst.position,
                    fields=fields,
                    new_email=new_email.get(dst.store),
                    member_of=tuple(sorted(dst.lists)),
                )
            )


# An opted-out contact's memberships are left as they are in both stores. Adding would break
# consent. Removing would act on an absence ccsync may have made itself: a contact it created
# while opted out was created without its lists, and the next cycle would otherwise strip the
# other store's memberships to match (the settling cycle of an initial sync removed thousands).
_LEFT_ALONE_ADD: Final = (
    "add to list",
    "the contact is unsubscribed; ccsync never adds an opted-out contact to a list",
)
_LEFT_ALONE_REMOVE: Final = (
    "remove from list",
    "the contact is unsubscribed; ccsync leaves an opted-out contact's list memberships as "
    "they are (the other store may lack them only because ccsync could not add them)",
)


def _lists(c: ContactState, a: ContactState, policy: Policy, out: Decisions) -> None:
    opted_out = _unsubscribed(c) or _unsubscribed(a)
    c_lists, a_lists = set(c.lists), set(a.lists)
    for link in policy.lists:
        in_c, in_a = link.ctct in c_lists, link.app in a_lists
        if in_c == in_a:
            continue
        src_member = in_c if link.source == "ctct" else in_a
        dst = a if link.source == "ctct" else c
        list_id = link.app if dst.store == "app" else link.ctct
        if opted_out:
            action, reason = _LEFT_ALONE_ADD if src_member else _LEFT_ALONE_REMOVE
            out.blocked.append(
                _block(
                    dst.email,
                    dst.store,
                    dst.store_id,
                    f"{action} {list_id}",
                    reason,
                    max(c.position, a.position),
                )
            )
        elif not src_member:
            out.commands.append(
                RemoveFromList(
                    target=dst.store,
                    email=dst.email,
                    store_id=dst.store_id,
                    basis=dst.position,
                    list_id=list_id,
                )
            )
        else:
            out.commands.append(
                AddToList(
                    target=dst.store,
                    email=dst.email,
                    store_id=dst.store_id,
                    basis=dst.position,
                    list_id=list_id,
                )
            )


def _mapped_lists(src: ContactState, policy: Policy) -> tuple[str, ...]:
    """The other store's ids of every mapped list ``src`` is in: a contact created in the other
    store brings all its memberships (that store had no say about this contact yet)."""
    member = set(src.lists)
    if src.store == "app":
        return tuple(sorted(link.ctct for link in policy.lists if link.app in member))
    return tuple(sorted(link.app for link in policy.lists if link.ctct in member))


def _profile_fields(src: ContactState, policy: Policy) -> dict[str, str | None]:
    synced = _synced(policy.fields)
    return {f: v for f, v in src.fields.items() if v and f in synced}


@functools.cache
def _synced(fields: tuple[str, ...]) -> frozenset[str]:
    return frozenset(fields)


def _create_in_ctct(a: ContactState, policy: Policy, out: Decisions) -> None:
    # An opted-out app contact is never created in Constant Contact: an import would make them
    # `implicit` (subscribed) until the unsubscribe lands, and they must never be mailed.
    if not policy.create_in_ctct or a.deleted or _unsubscribed(a):
        return
    out.commands.append(
        UpsertContact(
            target="ctct",
            email=a.email,
            fields=_profile_fields(a, policy),
            lists=_mapped_lists(a, policy),
            source_id=a.store_id,
        )
    )


def _create_in_app(c: ContactState, policy: Policy, out: Decisions) -> None:
    if not policy.create_in_app or c.deleted:
        return
    unsub = _unsubscribed(c)
    out.commands.append(
        UpsertContact(
            target="app",
            email=c.email,
            fields=_profile_fields(c, policy),
            lists=() if unsub else _mapped_lists(c, policy),
            source_id=c.store_id,
        )
    )
    if unsub:
        out.commands.append(
            Unsubscribe(
                target="app",
                email=c.email,
                reason=c.permission.reason,
                source=c.permission.source or "Contact",
                opted_out_at=c.permission.changed_at,
            )
        )
