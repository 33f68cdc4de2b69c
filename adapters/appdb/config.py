"""The mapping from an application's own schema to the engine's model, read from TOML.

Every name here is the app's: tables and columns ccsync reads and writes. Nothing outside the
mapped columns is ever read or written. ``AppDbConfig.from_toml`` checks the shape of the
mapping and raises ``ConfigError`` naming the key (``appdb.contacts.email``); whether the named
tables and columns exist is checked against the live schema by ``open_appdb`` and
``AppDatabase.check``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

from engine.errors import ConfigError
from engine.model import PERMISSIONS, TRACKING_KINDS, Permission

__all__ = [
    "ENGINE_FIELDS",
    "ActivitiesMap",
    "AppDbConfig",
    "ContactsMap",
    "ListsMap",
    "MembershipsMap",
    "PermissionMap",
    "is_engine_field",
]

Backend = Literal["sqlite", "postgres"]
ChangeDetection = Literal["auto", "triggers", "column"]

_ADDRESS_PARTS: Final = ("street", "city", "state", "postal_code", "country")
ENGINE_FIELDS: Final[frozenset[str]] = frozenset(
    (
        "first_name",
        "last_name",
        "job_title",
        "company_name",
        "birthday_month",
        "birthday_day",
        "anniversary",
        *(f"phone_{kind}" for kind in ("home", "work", "mobile", "other")),
        *(
            f"address_{kind}_{part}"
            for kind in ("home", "work", "other")
            for part in _ADDRESS_PARTS
        ),
    )
)
# Identifiers are quoted in SQL, but we still refuse anything exotic: a mapping is code-like
# configuration, and a name with quotes or NULs is far more likely a mistake than a real column.
_IDENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def is_engine_field(name: str) -> bool:
    """Whether ``name`` is a profile field of the engine's model (or a ``cf:`` custom field)."""
    return name in ENGINE_FIELDS or (name.startswith("cf:") and len(name) > 3)


class PermissionMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the app states email permission: a status text column, or a boolean column."""

    column: str
    kind: Literal["text", "boolean"] = "text"
    # text: app value -> engine permission; boolean: "true"/"false"/"null" -> permission
    values: dict[str, str] = {}  # checked against PERMISSIONS by validate(), naming the key
    unsubscribed_value: str | None = None  # what Unsubscribe writes (text columns)
    null: Permission = "not_set"  # what a NULL status means
    reason_column: str | None = None
    source_column: str | None = None
    changed_at_column: str | None = None

    def app_value_for(self, status: Permission) -> str | bool:
        """The app value ccsync writes for ``status`` (only ``unsubscribed`` is ever written)."""
        if self.kind == "boolean":
            return status in ("explicit", "implicit")
        if status == "unsubscribed" and self.unsubscribed_value is not None:
            return self.unsubscribed_value
        for app_value, perm in sorted(self.values.items()):
            if perm == status:
                return app_value
        raise ConfigError("appdb.contacts.permission.values", f"no app value maps to {status!r}")


class ContactsMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The contacts table."""

    table: str
    key: str
    email: str
    updated_at: str | None = None
    fields: dict[str, str] = {}  # engine field name -> column
    permission: PermissionMap | None = None
    deleted: str | None = None  # soft-delete column (NULL/false = live)
    deleted_kind: Literal["timestamp", "boolean"] = "timestamp"


class ListsMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The app's lists (or segments) table."""

    table: str
    key: str
    name: str
    description: str | None = None
    updated_at: str | None = None
    deleted: str | None = None


class MembershipsMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The list-membership link table: one row per (contact, list)."""

    table: str
    contact: str
    list: str


class ActivitiesMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The app's table of marketing activities (sends, opens, clicks ...)."""

    table: str
    contact: str
    campaign: str
    kind: str
    created_time: str
    campaign_name: str | None = None
    email: str | None = None
    details: str | None = None  # JSON text of TrackingActivity.details
    kind_values: dict[str, str] = {}  # engine kind -> app value (default: the engine's name)

    def app_kind(self, kind: str) -> str:
        """The app's value for the engine's tracking kind."""
        return self.kind_values.get(kind, kind)


class AppDbConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole ``[appdb]`` section: connection, mapping and behaviour."""

    contacts: ContactsMap
    backend: Backend = "sqlite"
    dsn: str = ""  # SQLite path, or a PostgreSQL DSN
    dsn_env: str | None = None  # read the DSN from this variable instead (it may hold a password)
    schema: str | None = None  # PostgreSQL schema holding the mapped tables (default: search_path)
    lists: ListsMap | None = None
    memberships: MembershipsMap | None = None
    activities: ActivitiesMap | None = None
    change_detection: ChangeDetection = "auto"
    change_table: str = "ccsync_changes"
    page_size: int = 1000
    write_batch: int = 5000
    overlap_seconds: float = 300.0
    full_scan_interval_seconds: float = 86400.0
    delete_mode: Literal["soft", "hard"] = "soft"

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any]) -> AppDbConfig:
        """Build and validate from the parsed ``[appdb]`` table of the ccsync TOML config."""
        try:
            cfg = msgspec.convert(dict(doc), type=cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(_key_of(exc), str(exc)) from None
        cfg.validate()
        return cfg

    def resolved_dsn(self) -> str:
        """The DSN to connect with (from ``dsn_env`` when set)."""
        if self.dsn_env:
            value = os.environ.get(self.dsn_env)
            if not value:
                raise ConfigError("appdb.dsn_env", f"environment variable {self.dsn_env} is unset")
            return value
        if not self.dsn:
            raise ConfigError("appdb.dsn", "give the database (a SQLite path or PostgreSQL DSN)")
        return self.dsn

    def validate(self) -> None:
        """Shape checks that need no database (the live schema is checked at open)."""
        c = self.contacts
        for key, name in _identifiers(self):
            if not _IDENT.match(name):
                raise ConfigError(key, f"not a plain SQL identifier: {name!r}")
        for field in c.fields:
            if not is_engine_field(field):
                raise ConfigError(
                    f"appdb.contacts.fields.{field}",
                    "unknown engine field (see docs/appdb.md; custom fields are 'cf:<name>')",
                )
        cols = [c.key, c.email, *c.fields.values()]
        dupes = sorted({col for col in cols if cols.count(col) > 1})
        if dupes:
            raise ConfigError("appdb.contacts.fields", f"column mapped twice: {', '.join(dupes)}")
        if c.permission is not None:
            _validate_permission(c.permission)
        if self.activities is not None:
            for kind in self.activities.kind_values:
                if kind not in TRACKING_KINDS:
                    raise ConfigError(
                        f"appdb.activities.kind_values.{kind}",
                        f"unknown tracking kind (one of {', '.join(TRACKING_KINDS)})",
                    )
        if self.page_size < 1 or self.write_batch < 1:
            raise ConfigError("appdb.page_size", "page_size and write_batch must be positive")
        if self.overlap_seconds < 0 or self.full_scan_interval_seconds < 0:
            raise ConfigError("appdb.overlap_seconds", "durations must not be negative")
        if self.change_detection == "column" and c.updated_at is None:
            raise ConfigError(
                "appdb.contacts.updated_at", "column change detection needs an updated-at column"
            )
        if self.delete_mode == "soft" and c.deleted is None and self.memberships is None:
            pass  # soft delete without a column degrades to "unsubscribe only"; documented


def _validate_permission(p: PermissionMap) -> None:
    if p.kind == "boolean":
        for k in p.values:
            if k not in ("true", "false", "null"):
                raise ConfigError(
                    f"appdb.contacts.permission.values.{k}", "boolean keys are true/false/null"
                )
        return
    if not p.values:
        raise ConfigError("appdb.contacts.permission.values", "map the app's status values")
    for k, v in p.values.items():
        if v not in PERMISSIONS:
            raise ConfigError(f"appdb.contacts.permission.values.{k}", f"unknown status {v!r}")
    if p.unsubscribed_value is None and "unsubscribed" not in p.values.values():
        raise ConfigError(
            "appdb.contacts.permission.unsubscribed_value",
            "no app value means unsubscribed: set unsubscribed_value",
        )


def _identifiers(cfg: AppDbConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = [("appdb.change_table", cfg.change_table)]
    if cfg.schema:
        out.append(("appdb.schema", cfg.schema))
    sections: list[tuple[str, msgspec.Struct | None]] = [
        ("contacts", cfg.contacts),
        ("contacts.permission", cfg.contacts.permission),
        ("lists", cfg.lists),
        ("memberships", cfg.memberships),
        ("activities", cfg.activities),
    ]
    for name, section in sections:
        if section is None:
            continue
        for attr in section.__struct_fields__:
            value = getattr(section, attr)
            if isinstance(value, str) and attr not in ("kind", "deleted_kind", "null"):
                if attr == "unsubscribed_value":
                    continue
                out.append((f"appdb.{name}.{attr}", value))
    out.extend((f"appdb.contacts.fields.{k}", v) for k, v in cfg.contacts.fields.items())
    return out


def _key_of(exc: msgspec.ValidationError) -> str:
    # msgspec says "... - at `$.contacts.email`": turn the path into our dotted config key.
    text = str(exc)
    match = re.search(r"at `\$(.*?)`", text)
    path = match.group(1) if match else ""
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\[['\"]?(.*?)['\"]?\]", r".\1", path)
    missing = re.search(r"missing required field `(.*?)`", text)
    if missing:
        path += "." + missing.group(1)
    unknown = re.search(r"unknown field `(.*?)`", text)
    if unknown:
        path += "." + unknown.group(1)
    return "appdb" + path
