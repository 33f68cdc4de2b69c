"""Narrow msgspec Structs for the Constant Contact v3 JSON this adapter reads.

Only the fields we use are declared; unknown fields are ignored, so the API may grow without
breaking us. Enumerations (permission_to_send, phone kind...) are decoded as plain strings and
checked during normalisation, so an unknown value rejects one record, not a whole page.
Decoders are built once here and reused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

__all__ = [
    "Activity",
    "ActivityStatus",
    "ApiError",
    "Campaign",
    "CampaignDetail",
    "CampaignsPage",
    "Contact",
    "ContactList",
    "ContactsPage",
    "CustomField",
    "CustomFieldDef",
    "CustomFieldsPage",
    "EmailAddress",
    "Links",
    "ListsPage",
    "PhoneNumber",
    "RawContactsPage",
    "StreetAddress",
    "TokenResponse",
    "TrackingRecord",
    "TrackingRecordsPage",
]


class Href(msgspec.Struct, frozen=True, gc=False):
    href: str


class Links(msgspec.Struct, frozen=True, gc=False):
    next: Href | None = None


class EmailAddress(msgspec.Struct, frozen=True, gc=False):
    address: str
    permission_to_send: str | None = None
    updated_at: datetime | None = None
    opt_in_source: str | None = None
    opt_out_source: str | None = None
    opt_out_date: datetime | None = None
    opt_out_reason: str | None = None


class CustomField(msgspec.Struct, frozen=True, gc=False):
    custom_field_id: str
    value: str | None = None


class PhoneNumber(msgspec.Struct, frozen=True, gc=False):
    phone_number: str | None = None
    kind: str | None = None


class StreetAddress(msgspec.Struct, frozen=True, gc=False):
    kind: str | None = None
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Contact(msgspec.Struct, frozen=True, gc=False):
    """A ContactResource as GET /contacts returns it with every ``include``.

    Only what normalisation and PUT bodies use is declared: notes, taggings, sources and
    creation times are skipped by the decoder, which keeps a 500-contact page cheap.
    """

    contact_id: str
    email_address: EmailAddress | None = None
    first_name: str | None = None
    last_name: str | None = None
    job_title: str | None = None
    company_name: str | None = None
    birthday_month: int | None = None
    birthday_day: int | None = None
    anniversary: str | None = None
    updated_at: datetime | None = None
    deleted_at: str | None = None  # a date (no time) per the spec; kept as text
    custom_fields: list[CustomField] = []
    phone_numbers: list[PhoneNumber] = []
    street_addresses: list[StreetAddress] = []
    list_memberships: list[str] = []


class ContactsPage(msgspec.Struct, frozen=True):
    contacts: list[Contact] = []
    links: Links | None = msgspec.field(default=None, name="_links")


class RawContactsPage(msgspec.Struct, frozen=True):
    """Fallback when one record of a page does not decode: each record decoded on its own."""

    contacts: list[msgspec.Raw] = []
    links: Links | None = msgspec.field(default=None, name="_links")


class ContactList(msgspec.Struct, frozen=True):
    list_id: str
    name: str
    description: str | None = None
    favorite: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: str | None = None


class ListsPage(msgspec.Struct, frozen=True):
    lists: list[ContactList] = []
    links: Links | None = msgspec.field(default=None, name="_links")


class CustomFieldDef(msgspec.Struct, frozen=True):
    custom_field_id: str
    name: str
    label: str | None = None


class CustomFieldsPage(msgspec.Struct, frozen=True):
    custom_fields: list[CustomFieldDef] = []
    links: Links | None = msgspec.field(default=None, name="_links")


class ActivityStatus(msgspec.Struct, frozen=True):
    items_total_count: int | None = None
    items_completed_count: int | None = None
    person_count: int | None = None
    error_count: int | None = None
    correctable_count: int | None = None
    cannot_add_to_list_count: int | None = None
    list_count: int | None = None


class Activity(msgspec.Struct, frozen=True):
    """A bulk activity (import, list membership, delete) as POSTed or polled."""

    activity_id: str
    state: str
    percent_done: int | None = None
    activity_errors: list[str | dict[str, str]] = []
    status: ActivityStatus | None = None


class Campaign(msgspec.Struct, frozen=True):
    campaign_id: str
    name: str | None = None
    current_status: str | None = None
    updated_at: datetime | None = None
    created_at: datetime | None = None


class CampaignsPage(msgspec.Struct, frozen=True):
    campaigns: list[Campaign] = []
    links: Links | None = msgspec.field(default=None, name="_links")


class CampaignActivityRef(msgspec.Struct, frozen=True):
    campaign_activity_id: str
    role: str | None = None


class CampaignDetail(msgspec.Struct, frozen=True):
    campaign_id: str
    name: str | None = None
    campaign_activities: list[CampaignActivityRef] = []


class TrackingRecord(msgspec.Struct, frozen=True):
    """One row of any of the per-campaign-activity tracking reports."""

    contact_id: str
    campaign_activity_id: str
    created_time: datetime
    email_address: str | None = None
    tracking_activity_type: str | None = None
    device_type: str | None = None
    url_id: str | int | None = None
    link_url: str | None = None
    bounce_code: str | None = None
    opt_out_reason: str | None = None


class TrackingRecordsPage(msgspec.Struct, frozen=True):
    tracking_activities: list[TrackingRecord] = []
    links: Links | None = msgspec.field(default=None, name="_links")


class ApiError(msgspec.Struct, frozen=True):
    error_key: str | None = None
    error_message: str | None = None


class TokenResponse(msgspec.Struct, frozen=True):
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: float | None = None
    token_type: str | None = None
    error: str | None = None
    error_description: str | None = None


CONTACTS_PAGE: Final = msgspec.json.Decoder(ContactsPage)
RAW_CONTACTS_PAGE: Final = msgspec.json.Decoder(RawContactsPage)
CONTACT: Final = msgspec.json.Decoder(Contact)
