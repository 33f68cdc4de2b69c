"""What wins: the sync policy, read once from the ``[policy]`` and ``[[lists]]`` config.

Opt-out always wins, in both directions, and is not configurable: there is deliberately no
option here for it. Everything else is: the source of record for profile fields (with per-field
overrides), which fields sync, the mapping between Constant Contact lists and the app's lists
(each with its own source of record), whether contacts are created and deletes propagate.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from engine.errors import ConfigError
from engine.model import STORES, Store

__all__ = ["DEFAULT_FIELDS", "ListLink", "Policy", "policy_from_toml"]

DEFAULT_FIELDS: Final = ("first_name", "last_name", "company_name", "job_title")


class ListLink(msgspec.Struct, frozen=True, kw_only=True):
    """A Constant Contact list and an app list that hold the same people."""

    ctct: str  # Constant Contact list_id (or, in config, its name: resolved at start)
    app: str  # the app's list key
    source: Store = "app"  # whose membership wins when the two disagree


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """The reconciler's rules. Opt-out-wins is not among them: it is not negotiable."""

    source_of_record: Store = "app"
    field_sources: dict[str, Store] = {}  # per-field overrides of source_of_record
    fields: tuple[str, ...] = DEFAULT_FIELDS
    lists: tuple[ListLink, ...] = ()
    create_in_ctct: bool = True  # app contacts missing in Constant Contact are created there
    create_in_app: bool = True  # Constant Contact contacts missing in the app are created there
    delete_ctct_to_app: bool = False  # propagate deletions made in Constant Contact to the app
    delete_app_to_ctct: bool = False  # propagate deletions made in the app to Constant Contact

    def source_for(self, field: str) -> Store:
        return self.field_sources.get(field, self.source_of_record)


def _store(value: Any, key: str) -> Store:
    if value not in STORES:
        raise ConfigError(key, f"must be one of {', '.join(STORES)}, not {value!r}")
    return value  # type: ignore[no-any-return]


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, not {value!r}")
    return value


def policy_from_toml(policy: dict[str, Any], lists: list[dict[str, Any]]) -> Policy:
    """Build the Policy from the ``[policy]`` table and the ``[[lists]]`` array of the config."""
    known = set(Policy.__struct_fields__) | {"deletes"}
    for k in policy:
        if k not in known:
            raise ConfigError(f"policy.{k}", "unknown option")
    sor = _store(policy.get("source_of_record", "app"), "policy.source_of_record")
    overrides_raw = policy.get("field_sources", {})
    if not isinstance(overrides_raw, dict):
        raise ConfigError("policy.field_sources", "must be a table of field = store")
    overrides = {f: _store(v, f"policy.field_sources.{f}") for f, v in overrides_raw.items()}
    fields = policy.get("fields", list(DEFAULT_FIELDS))
    if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
        raise ConfigError("policy.fields", "must be a list of field names")
    if "email" in fields:
        raise ConfigError("policy.fields", "email is the identity, not a synced field")
    links = []
    for i, entry in enumerate(lists):
        where = f"lists[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a table with ctct and app")
        for k in ("ctct", "app"):
            if not isinstance(entry.get(k), str) or not entry[k]:
                raise ConfigError(f"{where}.{k}", "is required (a list id or name)")
        extra = set(entry) - {"ctct", "app", "source"}
        if extra:
            raise ConfigError(f"{where}.{sorted(extra)[0]}", "unknown option")
        links.append(
            ListLink(
                ctct=entry["ctct"],
                app=entry["app"],
                source=_store(entry.get("source", sor), f"{where}.source"),
            )
        )
    return Policy(
        source_of_record=sor,
        field_sources=overrides,
        fields=tuple(fields),
        lists=tuple(links),
        create_in_ctct=_bool(policy.get("create_in_ctct", True), "policy.create_in_ctct"),
        create_in_app=_bool(policy.get("create_in_app", True), "policy.create_in_app"),
        delete_ctct_to_app=_bool(
            policy.get("delete_ctct_to_app", False), "policy.delete_ctct_to_app"
        ),
        delete_app_to_ctct=_bool(
            policy.get("delete_app_to_ctct", False), "policy.delete_app_to_ctct"
        ),
    )
