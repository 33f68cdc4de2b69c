"""Applying commands to Constant Contact through the safe paths only.

* UpsertContact -> contacts_json_import (email + the given fields; permission never sent, and
  imports never re-subscribe). Through GET + PUT instead when the import cannot express it:
  a new email address (imports key on email), a field to clear (imports ignore blanks), an
  address change on an existing contact (an import replaces that whole address), or an existing
  contact on no list (an import joins its rows to a list).
* AddToList / RemoveFromList -> add/remove_list_memberships, at most 500 contact_ids each.
* Unsubscribe -> GET with every include, then PUT the complete core fields with
  ``permission_to_send=unsubscribed`` and the reason: nothing is nulled. v3 has no bulk
  unsubscribe for an account's token (the swagger's one is a Technology Partner endpoint).
* DeleteContact -> contact_delete, at most 500 contact_ids each.

sign_up_form and resubscribe are never called: both can opt people back in. Every activity is
polled to completion and its failures come back on the commands they concern.
scripts/bench/ctct_writes.py shows the requests are the fewest the API allows.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
import structlog

from engine._aio import gather_or_cancel
from engine.commands import (
    AddToList,
    Command,
    DeleteContact,
    Outcome,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
    command_id,
)
from engine.errors import RetriableError, SkippableRecordError
from engine.model import normalise_email

from .activities import ActivityRunner, Submitted, failed, succeeded
from .client import CtctClient, CtctRequestError, CtctResponseError
from .config import CtctConfig
from .paging import INCLUDE
from .schema import CONTACT, Contact, ContactsPage, CustomFieldsPage
from .write_bodies import encode_row, import_batches, import_row, put_body

__all__ = ["CommandWriter"]

log = structlog.get_logger("ccsync.ctct")
MAX_IDS: Final = 500  # contact_ids per membership or delete activity
MAX_LISTS: Final = 50  # list_ids per membership activity
_PUT_CONCURRENCY: Final = 4  # contacts read and written at once (the API allows 4/s)
_contacts: Final = msgspec.json.Decoder(ContactsPage)
_cfields: Final = msgspec.json.Decoder(CustomFieldsPage)
_enc: Final = msgspec.json.Encoder()


Key = str  # a contact as commands name it: its contact_id, else its normalised email
Indexed = tuple[int, Command]


def _keys(cmd: Command) -> set[Key]:
    return {k for k in (cmd.store_id, normalise_email(cmd.email)) if k}


class CommandWriter:
    """Applies one batch of commands; one Outcome per command, in order.

    Requests are kept to what the API allows (scripts/bench/ctct_writes.py counts them): every
    bulk activity of the batch is POSTed before any is polled and all are polled together
    (activities.py); commands that must go through GET + PUT are merged per contact, so a
    contact costs one GET and at most one PUT however many such commands it has; the PUTs run
    while the activities are processed. Commands whose order matters wait for a later round,
    after the first has ended: a list change of a contact whose import creates it or may name
    that list, or who is opting out; a delete of a contact changed in the same batch.
    """

    def __init__(
        self,
        client: CtctClient,
        cfg: CtctConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._cfg = cfg
        self._activities = ActivityRunner(client, cfg, sleep=sleep)
        self._cf_by_id: dict[str, str] | None = None

    async def apply(self, commands: Sequence[Command]) -> list[Outcome]:
        out: dict[int, Outcome] = {}
        imports: list[tuple[int, UpsertContact]] = []
        puts: dict[Key, list[Indexed]] = {}
        members: list[tuple[int, AddToList | RemoveFromList]] = []
        deletes: list[tuple[int, DeleteContact]] = []
        for i, cmd in enumerate(commands):
            if cmd.target != "ctct":
                out[i] = failed(cmd, f"command targets {cmd.target!r}, not Constant Contact")
            elif isinstance(cmd, Unsubscribe) or (
                isinstance(cmd, UpsertContact) and self._needs_put(cmd)
            ):
                puts.setdefault(cmd.store_id or normalise_email(cmd.email), []).append((i, cmd))
            elif isinstance(cmd, UpsertContact):
                imports.append((i, cmd))
            elif isinstance(cmd, AddToList | RemoveFromList):
                members.append((i, cmd))
            elif isinstance(cmd, DeleteContact):
                deletes.append((i, cmd))
            else:
                out[i] = failed(cmd, "tracking is recorded in the app, not in Constant Contact")
        # A contact read and PUT whole must not be imported meanwhile: its upserts join the PUT.
        owner = {k: key for key, group in puts.items() for _, c in group for k in _keys(c)}
        put_keys = set(owner)
        for i, cmd in imports:
            if shared := _keys(cmd) & put_keys:
                puts[owner[min(shared)]].append((i, cmd))
        imports = [(i, c) for i, c in imports if not _keys(c) & put_keys]
        # Order matters only within one contact: a list change waits for the contact's import
        # when the import may touch that list or must create the contact first, and for its
        # opt-out; a delete waits for everything else the batch does to the contact.
        lists_of: dict[Key, set[str]] = defaultdict(set)  # lists an import may name, by contact
        for _, cmd in imports:
            lists = {*cmd.lists, *cmd.member_of, *filter(None, [self._cfg.import_list_id])}
            for k in _keys(cmd):
                lists_of[k] |= lists
        opting_out = {
            k for group in puts.values() for _, c in group if isinstance(c, Unsubscribe)
            for k in _keys(c)
        }  # fmt: skip

        def waits(cmd: AddToList | RemoveFromList) -> bool:
            keys = _keys(cmd)
            if keys & opting_out:
                return True
            imported = [k for k in keys if k in lists_of]
            return bool(imported) and (
                cmd.store_id is None or any(cmd.list_id in lists_of[k] for k in imported)
            )

        later_members = [(i, c) for i, c in members if waits(c)]
        members = [(i, c) for i, c in members if not waits(c)]
        touched = {k for _, c in [*imports, *members] for k in _keys(c)} | put_keys
        later_deletes = [(i, c) for i, c in deletes if _keys(c) & touched]
        deletes = [(i, c) for i, c in deletes if not _keys(c) & touched]
        after_later = {k for _, c in later_members for k in _keys(c)}
        last_deletes = [(i, c) for i, c in later_deletes if _keys(c) & after_later]
        later_deletes = [(i, c) for i, c in later_deletes if not _keys(c) & after_later]

        submitted: list[Submitted] = []
        if imports:
            submitted += await self._submit_imports(imports, out)
        submitted += await self._submit_bulk(members, deletes, out)
        if puts:
            out.update(await self._puts(list(puts.values())))
        out.update(await self._activities.finish(submitted))
        for round_members, round_deletes in ((later_members, later_deletes), ([], last_deletes)):
            if round_members or round_deletes:
                later = await self._submit_bulk(round_members, round_deletes, out)
                out.update(await self._activities.finish(later))
        return [out[i] for i in range(len(commands))]

    def _needs_put(self, cmd: UpsertContact) -> bool:
        if cmd.store_id is None:
            return False
        if cmd.new_email is not None and normalise_email(cmd.new_email) != cmd.email:
            return True
        if any(v is None for v in cmd.fields.values()):
            return True  # imports ignore blanks: only a PUT clears a field (reference §1.6)
        if any(f.startswith("address_") for f in cmd.fields):
            return True
        # An import joins every row to its lists (it must name one): an existing contact is
        # imported through a list it is already on, and one on no list is written by PUT.
        return not cmd.member_of

    async def _guard(self, cmds: Sequence[Indexed], work: Awaitable[Outcome]) -> dict[int, Outcome]:
        """Request errors become the commands' Outcomes; fatal run-level errors propagate."""
        try:
            done = await work
        except CtctRequestError as exc:
            return {i: failed(c, exc.text, retriable=exc.status == 409) for i, c in cmds}
        except CtctResponseError as exc:  # e.g. the stored contact breaks a documented limit
            return {i: failed(c, str(exc)) for i, c in cmds}
        except SkippableRecordError as exc:
            return {i: failed(c, str(exc)) for i, c in cmds}
        except RetriableError as exc:
            return {i: failed(c, str(exc), retriable=True) for i, c in cmds}
        return {i: msgspec.structs.replace(done, command_id=command_id(c)) for i, c in cmds}

    # -- reads used by writes ---------------------------------------------------------------

    async def _custom_fields(self) -> dict[str, str]:
        """custom_field_id -> name (imports name fields; observed records carry ids)."""
        if self._cf_by_id is None:
            found: dict[str, str] = {}
            path: str | None = "/contact_custom_fields"
            params: dict[str, str] = {"limit": "100"}
            try:
                while path is not None:
                    page = await self._client.call("GET", path, _cfields.decode, params=params)
                    found.update((f.custom_field_id, f.name) for f in page.custom_fields)
                    path = page.links.next.href if page.links and page.links.next else None
                    params = {}
            except CtctRequestError as exc:
                # Without definitions, cf: keys go out as given (names work for imports).
                log.warning("ctct.custom_fields_unavailable", status=exc.status, error=exc.text)
            self._cf_by_id = found
        return self._cf_by_id

    async def _find(self, cmd: Command) -> Contact | None:
        """The contact by id (every include), or by email when the command has no id."""
        if cmd.store_id is not None:
            try:
                return await self._client.call(
                    "GET", f"/contacts/{cmd.store_id}", CONTACT.decode, params={"include": INCLUDE}
                )
            except CtctRequestError as exc:
                if exc.status != 404:
                    raise
                return None
        params = {"email": cmd.email, "status": "all", "include": INCLUDE}
        page = await self._client.call("GET", "/contacts", _contacts.decode, params=params)
        return page.contacts[0] if page.contacts else None

    # -- PUT paths ----------------------------------------------------------------------------

    async def _puts(self, groups: list[list[Indexed]]) -> dict[int, Outcome]:
        """GET + PUT per contact, a few contacts at a time (the rate budget paces them)."""
        gate = asyncio.Semaphore(_PUT_CONCURRENCY)
        out: dict[int, Outcome] = {}

        async def one(group: list[Indexed]) -> None:
            async with gate:
                out.update(await self._guard(group, self._put(group)))

        # A run-level failure (quota spent, authorisation lost): no more requests.
        await gather_or_cancel(*(one(g) for g in groups))
        return out

    async def _put(self, group: list[Indexed]) -> Outcome:
        """One contact's PUT-bound commands as one GET and at most one PUT.

        The body is built from the GET just made: PUT nulls every core field it leaves out,
        so it carries them all as read, changed only where a command says so (pitfall 8).
        """
        first = group[0][1]
        current = await self._find(first)
        if current is None:
            return failed(first, f"no contact {first.store_id or first.email} in Constant Contact")
        cid = current.contact_id
        unsubscribe = next((c for _, c in group if isinstance(c, Unsubscribe)), None)
        upserts = [c for _, c in group if isinstance(c, UpsertContact)]
        email = current.email_address
        already = email is not None and email.permission_to_send == "unsubscribed"
        notes = []
        if unsubscribe is not None and already:
            notes.append("already unsubscribed")
            unsubscribe = None
        if unsubscribe is None and not upserts:
            return succeeded(first, "; ".join(notes) or None, store_id=cid)
        changes: dict[str, str | None] = {}
        new_email = None
        for cmd in upserts:
            changes.update(await self._ids_for_custom_fields(cmd.fields))
            new_email = cmd.new_email or new_email
        if unsubscribe is not None:
            # Reviving a deleted contact requires update_source=Account (pitfall 4).
            contact_said = unsubscribe.source == "Contact" and not current.deleted_at
            body = put_body(
                current,
                update_source="Contact" if contact_said else "Account",
                changes=changes,
                new_email=new_email,
                permission_to_send="unsubscribed",
                opt_out_reason=unsubscribe.reason or "",
            )
            if current.deleted_at:
                notes.append("revived deleted contact to record the opt-out")
        else:
            body = put_body(current, update_source="Account", changes=changes, new_email=new_email)
        await self._client.call("PUT", f"/contacts/{cid}", CONTACT.decode, body=_enc.encode(body))
        return succeeded(first, "; ".join(notes) or None, store_id=cid)

    async def _ids_for_custom_fields(self, fields: dict[str, str | None]) -> dict[str, str | None]:
        if not any(f.startswith("cf:") for f in fields):
            return dict(fields)
        by_name = {name: fid for fid, name in (await self._custom_fields()).items()}
        return {
            (f"cf:{by_name.get(f[3:], f[3:])}" if f.startswith("cf:") else f): v
            for f, v in fields.items()
        }

    # -- bulk activities ----------------------------------------------------------------------

    async def _submit_imports(
        self, items: list[tuple[int, UpsertContact]], out: dict[int, Outcome]
    ) -> list[Submitted]:
        """POST the import activities (one per set of lists, <= 40,000 rows and < 4 MB each)."""
        names = (
            await self._custom_fields()
            if any(f.startswith("cf:") for _, c in items for f in c.fields)
            else {}
        )
        groups: dict[tuple[str, ...], list[tuple[int, UpsertContact, bytes]]] = defaultdict(list)
        via = _covering_lists({i: cmd.member_of for i, cmd in items if cmd.store_id is not None})
        for i, cmd in items:
            lists: tuple[str, ...]
            if cmd.store_id is not None:
                # A list it is on: the import joins it to nothing new (on none: a PUT).
                lists = (via[i],) if i in via else ()
            else:
                lists = cmd.lists or (
                    (self._cfg.import_list_id,) if self._cfg.import_list_id else ()
                )
            if not lists:
                out[i] = failed(
                    cmd,
                    "contacts_json_import needs a list: give the contact lists or set "
                    "ctct.import_list_id",
                )
                continue
            try:
                row = import_row(cmd.store_id or cmd.email, cmd.email, cmd.fields, names)
            except SkippableRecordError as exc:
                out[i] = failed(cmd, str(exc))
                continue
            groups[tuple(sorted(set(lists)))].append((i, cmd, encode_row(row)))
        submitted = []
        for list_ids, group in groups.items():
            for batch in import_batches((k, enc) for k, (_, _, enc) in enumerate(group)):
                chosen = [group[k] for k in batch]
                body = (
                    b'{"import_data":['
                    + b",".join(enc for _, _, enc in chosen)
                    + b'],"list_ids":'
                    + _enc.encode(list(list_ids))
                    + b"}"
                )
                cmds = [(i, cmd) for i, cmd, _ in chosen]
                submitted.append(await self._activities.submit("contacts_json_import", body, cmds))
        return submitted

    async def _submit_bulk(
        self,
        members: Sequence[tuple[int, AddToList | RemoveFromList]],
        deletes: Sequence[tuple[int, DeleteContact]],
        out: dict[int, Outcome],
    ) -> list[Submitted]:
        """POST the membership and delete activities (<= 500 contact ids each)."""
        resolved = await self._resolve([*members, *deletes], out)
        submitted = []
        for kind in ("add", "remove"):
            pairs = [
                (i, c, cid)
                for i, c, cid in resolved
                if isinstance(c, AddToList if kind == "add" else RemoveFromList)
            ]
            for list_ids, group in membership_groups(pairs):
                cmds = [(i, c) for i, c, _ in group]
                ids = list(dict.fromkeys(cid for _, _, cid in group))
                payload = {"source": {"contact_ids": ids}, "list_ids": list(list_ids)}
                submitted.append(
                    await self._activities.submit(
                        f"{kind}_list_memberships", _enc.encode(payload), cmds
                    )
                )
        doomed = [(i, c, cid) for i, c, cid in resolved if isinstance(c, DeleteContact)]
        for start in range(0, len(doomed), MAX_IDS):
            chunk = doomed[start : start + MAX_IDS]
            ids = list(dict.fromkeys(cid for _, _, cid in chunk))
            cmds = [(i, c) for i, c, _ in chunk]
            body = _enc.encode({"contact_ids": ids})
            submitted.append(await self._activities.submit("contact_delete", body, cmds))
        return submitted

    async def _resolve(
        self, group: Sequence[tuple[int, Command]], out: dict[int, Outcome]
    ) -> list[tuple[int, Command, str]]:
        """(index, command, contact_id); a command without an id costs a GET by email."""
        resolved: list[tuple[int, Command, str]] = []
        for i, cmd in group:
            cid = cmd.store_id
            if cid is None:
                found = await self._guard_find(cmd)
                if isinstance(found, Outcome):
                    out[i] = found
                    continue
                cid = found
            resolved.append((i, cmd, cid))
        return resolved

    async def _guard_find(self, cmd: Command) -> str | Outcome:
        try:
            found = await self._find(cmd)
        except CtctRequestError as exc:
            return failed(cmd, exc.text)
        except RetriableError as exc:
            return failed(cmd, str(exc), retriable=True)
        if found is None:
            if isinstance(cmd, DeleteContact | RemoveFromList):
                return succeeded(cmd, "no such contact in Constant Contact")
            return failed(cmd, f"no contact {cmd.email} in Constant Contact")
        return found.contact_id


def membership_groups(
    pairs: Sequence[tuple[int, Command, str]],
) -> list[tuple[tuple[str, ...], list[tuple[int, Command, str]]]]:
    """Membership changes of one kind as activities: (list_ids, [(index, command, id)]).

    An activity applies every one of its list_ids to every one of its (<= 500) contact_ids, so
    it may only hold contacts that change exactly those lists. Two ways to cut: one list per
    activity, or one activity per set of lists that several contacts share; the fewer
    activities wins. When each contact changes one list, both are the minimum.
    """
    by_list: dict[tuple[str, ...], list[tuple[int, Command, str]]] = defaultdict(list)
    lists_of: dict[str, set[str]] = defaultdict(set)
    for i, c, cid in pairs:
        assert isinstance(c, AddToList | RemoveFromList)
        by_list[(c.list_id,)].append((i, c, cid))
        lists_of[cid].add(c.list_id)
    by_set: dict[tuple[str, ...], list[tuple[int, Command, str]]] = defaultdict(list)
    for i, c, cid in pairs:
        by_set[tuple(sorted(lists_of[cid]))].append((i, c, cid))

    def cut(groups: dict[tuple[str, ...], list[tuple[int, Command, str]]]) -> list[Any]:
        out = []
        for list_ids, group in groups.items():
            ids = list(dict.fromkeys(cid for _, _, cid in group))
            for start in range(0, len(ids), MAX_IDS):
                chunk = set(ids[start : start + MAX_IDS])
                out.append((list_ids, [p for p in group if p[2] in chunk]))
        return out

    per_list = cut(by_list)
    if any(len(k) > MAX_LISTS for k in by_set):
        return per_list
    per_set = cut(by_set)
    return per_set if len(per_set) < len(per_list) else per_list


def _covering_lists(member_of: dict[int, tuple[str, ...]]) -> dict[int, str]:
    """For each existing contact, one list it is on, choosing few lists overall (greedy set
    cover: the list most of the rest are on, again and again), so few imports carry them."""
    out: dict[int, str] = {}
    left = {i: lists for i, lists in member_of.items() if lists}
    while left:
        counts: dict[str, int] = defaultdict(int)
        for lists in left.values():
            for lid in lists:
                counts[lid] += 1
        best = max(counts, key=lambda lid: (counts[lid], lid))
        for i in [i for i, lists in left.items() if best in lists]:
            out[i] = best
            del left[i]
    return out
