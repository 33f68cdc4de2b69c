"""Applying commands to Constant Contact through the safe paths only.

* UpsertContact -> contacts_json_import (email + the given fields; permission never sent, and
  imports never re-subscribe). Through GET + PUT instead when the import cannot express it:
  a new email address (imports key on email), a field to clear (imports ignore blanks), or an
  address change on an existing contact (an import replaces that whole address).
* AddToList / RemoveFromList -> add/remove_list_memberships, at most 500 contact_ids each.
* Unsubscribe -> GET with every include, then PUT the complete core fields with
  ``permission_to_send=unsubscribed`` and the reason: nothing is nulled.
* DeleteContact -> contact_delete, at most 500 contact_ids each.

sign_up_form and resubscribe are never called: both can opt people back in. Every activity is
polled to completion and its failures come back on the commands they concern.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec
import structlog

from engine.commands import (
    AddToList,
    Command,
    DeleteContact,
    Outcome,
    RemoveFromList,
    Unsubscribe,
    UpsertContact,
)
from engine.errors import RetriableError, SkippableRecordError
from engine.model import normalise_email

from .activities import ActivityRunner, failed, succeeded
from .client import CtctClient, CtctRequestError, CtctResponseError
from .config import CtctConfig
from .paging import INCLUDE
from .schema import CONTACT, Contact, ContactsPage, CustomFieldsPage
from .write_bodies import encode_row, import_batches, import_row, put_body

__all__ = ["CommandWriter"]

log = structlog.get_logger("ccsync.ctct")
MAX_IDS: Final = 500
_contacts: Final = msgspec.json.Decoder(ContactsPage)
_cfields: Final = msgspec.json.Decoder(CustomFieldsPage)
_enc: Final = msgspec.json.Encoder()


class CommandWriter:
    """Applies one batch of commands; one Outcome per command, in order."""

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
        puts: list[tuple[int, Command]] = []
        members: dict[tuple[str, str], list[tuple[int, AddToList | RemoveFromList]]] = {}
        deletes: list[tuple[int, DeleteContact]] = []
        for i, cmd in enumerate(commands):
            if cmd.target != "ctct":
                out[i] = failed(cmd, f"command targets {cmd.target!r}, not Constant Contact")
            elif isinstance(cmd, UpsertContact):
                (puts if self._needs_put(cmd) else imports).append((i, cmd))
            elif isinstance(cmd, Unsubscribe):
                puts.append((i, cmd))
            elif isinstance(cmd, AddToList | RemoveFromList):
                kind = "add" if isinstance(cmd, AddToList) else "remove"
                members.setdefault((kind, cmd.list_id), []).append((i, cmd))
            elif isinstance(cmd, DeleteContact):
                deletes.append((i, cmd))
            else:
                out[i] = failed(cmd, "tracking is recorded in the app, not in Constant Contact")
        if imports:
            out.update(await self._imports(imports))
        for i, cmd in puts:
            out[i] = await self._guard(cmd, self._put(cmd))
        for (kind, list_id), group in members.items():
            out.update(await self._bulk_ids(f"{kind}_list_memberships", group, list_id))
        if deletes:
            out.update(await self._bulk_ids("contact_delete", deletes, None))
        return [out[i] for i in range(len(commands))]

    def _needs_put(self, cmd: UpsertContact) -> bool:
        if cmd.store_id is None:
            return False
        if cmd.new_email is not None and normalise_email(cmd.new_email) != cmd.email:
            return True
        if any(v is None for v in cmd.fields.values()):
            return True
        if any(f.startswith("address_") for f in cmd.fields):
            return True
        return not cmd.lists and self._cfg.import_list_id is None

    async def _guard(self, cmd: Command, work: Awaitable[Outcome]) -> Outcome:
        """One command's request errors become its Outcome; fatal run-level errors propagate."""
        try:
            return await work
        except CtctRequestError as exc:
            return failed(cmd, exc.text, retriable=exc.status == 409)
        except CtctResponseError as exc:  # e.g. the stored contact breaks a documented limit
            return failed(cmd, str(exc))
        except SkippableRecordError as exc:
            return failed(cmd, str(exc))
        except RetriableError as exc:
            return failed(cmd, str(exc), retriable=True)

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

    async def _put(self, cmd: Command) -> Outcome:
        current = await self._find(cmd)
        if current is None:
            return failed(cmd, f"no contact {cmd.store_id or cmd.email} in Constant Contact")
        cid = current.contact_id
        if isinstance(cmd, Unsubscribe):
            email = current.email_address
            if email is not None and email.permission_to_send == "unsubscribed":
                return succeeded(cmd, "already unsubscribed", store_id=cid)
            # Reviving a deleted contact requires update_source=Account (pitfall 4).
            source = "Contact" if cmd.source == "Contact" and not current.deleted_at else "Account"
            body = put_body(
                current,
                update_source=source,
                permission_to_send="unsubscribed",
                opt_out_reason=cmd.reason or "",
            )
            detail = "revived deleted contact to record the opt-out" if current.deleted_at else None
        else:
            assert isinstance(cmd, UpsertContact)
            changes = await self._ids_for_custom_fields(cmd.fields)
            body = put_body(
                current, update_source="Account", changes=changes, new_email=cmd.new_email
            )
            detail = None
        await self._client.call("PUT", f"/contacts/{cid}", CONTACT.decode, body=_enc.encode(body))
        return succeeded(cmd, detail, store_id=cid)

    async def _ids_for_custom_fields(self, fields: dict[str, str | None]) -> dict[str, str | None]:
        if not any(f.startswith("cf:") for f in fields):
            return dict(fields)
        by_name = {name: fid for fid, name in (await self._custom_fields()).items()}
        return {
            (f"cf:{by_name.get(f[3:], f[3:])}" if f.startswith("cf:") else f): v
            for f, v in fields.items()
        }

    # -- bulk activities ----------------------------------------------------------------------

    async def _imports(self, items: list[tuple[int, UpsertContact]]) -> dict[int, Outcome]:
        out: dict[int, Outcome] = {}
        names = (
            await self._custom_fields()
            if any(f.startswith("cf:") for _, c in items for f in c.fields)
            else {}
        )
        groups: dict[tuple[str, ...], list[tuple[int, UpsertContact, bytes]]] = defaultdict(list)
        for i, cmd in items:
            lists = cmd.lists or ((self._cfg.import_list_id,) if self._cfg.import_list_id else ())
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
            groups[tuple(sorted(lists))].append((i, cmd, encode_row(row)))
        for lists, group in groups.items():
            for batch in import_batches((k, enc) for k, (_, _, enc) in enumerate(group)):
                chosen = [group[k] for k in batch]
                body = (
                    b'{"import_data":['
                    + b",".join(enc for _, _, enc in chosen)
                    + b'],"list_ids":'
                    + _enc.encode(list(lists))
                    + b"}"
                )
                cmds = [(i, cmd) for i, cmd, _ in chosen]
                out.update(await self._activities.run("contacts_json_import", body, cmds))
        return out

    async def _bulk_ids(
        self,
        kind: str,
        group: Sequence[tuple[int, AddToList | RemoveFromList | DeleteContact]],
        list_id: str | None,
    ) -> dict[int, Outcome]:
        out: dict[int, Outcome] = {}
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
        for start in range(0, len(resolved), MAX_IDS):
            chunk = resolved[start : start + MAX_IDS]
            ids = list(dict.fromkeys(cid for _, _, cid in chunk))
            if list_id is None:
                payload: dict[str, object] = {"contact_ids": ids}
            else:
                payload = {"source": {"contact_ids": ids}, "list_ids": [list_id]}
            cmds = [(i, cmd) for i, cmd, _ in chunk]
            out.update(await self._activities.run(kind, _enc.encode(payload), cmds))
        return out

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
