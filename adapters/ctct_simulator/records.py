"""Small records of the account besides contacts: lists and custom field definitions."""

from __future__ import annotations

__all__ = ["ContactList", "CustomFieldDef", "field_name"]


class ContactList:
    """A contact list."""

    __slots__ = (
        "created_at",
        "deleted_at",
        "description",
        "favorite",
        "list_id",
        "name",
        "updated_at",
    )

    def __init__(self, list_id: str, name: str, now: int, description: str | None = None) -> None:
        self.list_id = list_id
        self.name = name
        self.description = description
        self.favorite = False
        self.created_at = now
        self.updated_at = now
        self.deleted_at: int | None = None


class CustomFieldDef:
    """A custom field definition (``CustomField``); contacts store values by its id."""

    __slots__ = ("created_at", "custom_field_id", "label", "name", "type", "updated_at")

    def __init__(self, custom_field_id: str, label: str, kind: str, now: int) -> None:
        self.custom_field_id = custom_field_id
        self.label = label
        self.name = field_name(label)
        self.type = kind
        self.created_at = self.updated_at = now


def field_name(label: str) -> str:
    """The API derives a field's name from its label: lower case, underscores."""
    return "".join(ch if ch.isalnum() else "_" for ch in label.strip().lower())[:50]
