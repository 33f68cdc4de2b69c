"""Request bodies of the simulated API, decoded straight into narrow Structs.

The spec's limits (lengths, counts, ranges) are constraints here, so msgspec's error names the
field (``Expected `str` of length <= 50 - at `$.first_name```); the handler turns it into a
400 array. Sub-resources default to UNSET so a PUT can tell "left out" (kept) from "sent".
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "AddressIn",
    "ContactDeleteIn",
    "ContactPostIn",
    "ContactPutIn",
    "CustomFieldIn",
    "EmailAddressIn",
    "ExcludeIn",
    "ImportIn",
    "ListIn",
    "MembershipIn",
    "MembershipSourceIn",
    "NoteIn",
    "PhoneIn",
    "ResubscribeIn",
    "SignUpAddressIn",
    "SignUpIn",
]

Str50 = Annotated[str, Meta(max_length=50)]
Month = Annotated[int, Meta(ge=1, le=12)]
Day = Annotated[int, Meta(ge=1, le=31)]


class EmailAddressIn(msgspec.Struct, kw_only=True):
    """``EmailAddressPut`` / ``EmailAddressPost`` (read-only fields are ignored)."""

    address: Annotated[str, Meta(max_length=80)]
    permission_to_send: str | None = None
    opt_out_reason: Annotated[str, Meta(max_length=255)] | None = None


class PhoneIn(msgspec.Struct, kw_only=True):
    """``PhoneNumberPut``."""

    phone_number: Annotated[str, Meta(max_length=25)]
    kind: str = "other"


class AddressIn(msgspec.Struct, kw_only=True):
    """``StreetAddressPut``."""

    kind: str
    street: Annotated[str, Meta(max_length=255)] | None = None
    city: Str50 | None = None
    state: Str50 | None = None
    postal_code: Str50 | None = None
    country: Str50 | None = None


class CustomFieldIn(msgspec.Struct, kw_only=True):
    """``ContactCustomField``."""

    custom_field_id: str
    value: Annotated[str, Meta(max_length=255)] = ""


class NoteIn(msgspec.Struct, kw_only=True):
    """``Note``."""

    content: Annotated[str, Meta(max_length=2000)]
    note_id: str | None = None
    created_at: str | None = None


class _ContactIn(msgspec.Struct, kw_only=True):
    first_name: Str50 | None = None
    last_name: Str50 | None = None
    job_title: Str50 | None = None
    company_name: Str50 | None = None
    birthday_month: Month | None = None
    birthday_day: Day | None = None
    anniversary: Annotated[str, Meta(max_length=10)] | None = None
    custom_fields: Annotated[list[CustomFieldIn], Meta(max_length=25)] | UnsetType = UNSET
    phone_numbers: Annotated[list[PhoneIn], Meta(max_length=3)] | UnsetType = UNSET
    street_addresses: Annotated[list[AddressIn], Meta(max_length=3)] | UnsetType = UNSET
    list_memberships: Annotated[list[str], Meta(max_length=50)] | UnsetType = UNSET
    taggings: Annotated[list[str], Meta(max_length=50)] | UnsetType = UNSET
    notes: Annotated[list[NoteIn], Meta(max_length=150)] | UnsetType = UNSET


class ContactPutIn(_ContactIn, kw_only=True):
    """``ContactPutRequest``: ``update_source`` is required."""

    update_source: str
    email_address: EmailAddressIn | None = None


class ContactPostIn(_ContactIn, kw_only=True):
    """``ContactPostRequest``."""

    email_address: EmailAddressIn | None = None
    create_source: str | None = None


class SignUpAddressIn(msgspec.Struct, kw_only=True):
    """The one ``street_address`` of a sign-up form."""

    kind: str
    street: Annotated[str, Meta(max_length=255)] | None = None
    city: Str50 | None = None
    state: Str50 | None = None
    postal_code: Str50 | None = None
    country: Str50 | None = None


class SignUpIn(msgspec.Struct, kw_only=True):
    """``ContactCreateOrUpdateInput``: partial update keyed by email; lists required."""

    list_memberships: Annotated[list[str], Meta(min_length=1, max_length=50)]
    email_address: Str50 | None = None
    first_name: Str50 | None = None
    last_name: Str50 | None = None
    job_title: Str50 | None = None
    company_name: Str50 | None = None
    phone_number: Annotated[str, Meta(max_length=25)] | None = None
    custom_fields: Annotated[list[CustomFieldIn], Meta(max_length=50)] | None = None
    anniversary: str | None = None
    birthday_month: Month | None = None
    birthday_day: Day | None = None
    street_address: SignUpAddressIn | None = None


class ResubscribeIn(msgspec.Struct, kw_only=True):
    """``ContactResubscribeRequest``."""

    list_ids: list[str]


class ListIn(msgspec.Struct, kw_only=True):
    """``ListInput``."""

    name: Annotated[str, Meta(min_length=1, max_length=255)]
    favorite: bool = False
    description: str | None = None


class ImportIn(msgspec.Struct, kw_only=True):
    """``ContactsJsonImport``: rows stay raw dicts (``cf:*`` keys are open-ended)."""

    import_data: list[dict[str, object]]
    list_ids: Annotated[list[str], Meta(min_length=1, max_length=50)]
    sms_permission_to_send: str | None = None


class MembershipSourceIn(msgspec.Struct, kw_only=True):
    """The ``source`` of a list membership activity."""

    contact_ids: Annotated[list[str], Meta(max_length=500)] | None = None
    list_ids: Annotated[list[str], Meta(max_length=50)] | None = None
    all_active_contacts: bool = False
    tag_ids: list[str] | None = None
    segment_id: int | None = None
    engagement_level: str | None = None


class ExcludeIn(msgspec.Struct, kw_only=True):
    """Contacts to leave out of an ``all_active_contacts`` or ``list_ids`` source."""

    contact_ids: list[str] = []


class MembershipIn(msgspec.Struct, kw_only=True):
    """``ListActivityAddContacts`` / ``ListActivityRemoveContacts``."""

    list_ids: Annotated[list[str], Meta(min_length=1, max_length=50)]
    source: MembershipSourceIn
    exclude: ExcludeIn | None = None


class ContactDeleteIn(msgspec.Struct, kw_only=True):
    """``ContactDelete``: ``contact_ids`` or ``list_ids``."""

    contact_ids: Annotated[list[str], Meta(max_length=500)] | None = None
    list_ids: Annotated[list[str], Meta(max_length=50)] | None = None
