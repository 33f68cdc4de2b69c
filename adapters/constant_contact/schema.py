"""Narrow msgspec Structs for the Constant Contact v3 JSON this adapter reads.

Only the fields we use are declared; unknown fields are ignored, so the API may grow without
breaking us. Enumerations (permission_to_send, phone kind...) are decoded as plain strings and
checked during normalisation, so an unknown value rejects one record, not a whole page.
Decoders are built once here and reused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "ActivitiesPage",
    "Activity",
    "ActivityStats",
    "ActivityStatsPage",
    "ActivityStatsResult",
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


# Limits and enumerations of the v3 swagger, checked by the decoder itself (in C): a record that
# breaks one fails to decode, and observation rejects that record by contact_id and field.
Source = Literal["Contact", "Account"]
PermissionToSend = Literal[
    "explicit", "implicit", "not_set", "pending_confirmation", "temp_hold", "unsubscribed"
]
Str50 = Annotated[str, msgspec.Meta(max_length=50)]
Str255 = Annotated[str, msgspec.Meta(max_length=255)]


class EmailAddress(msgspec.Struct, frozen=True, gc=False):
    address: Annotated[str, msgspec.Meta(max_length=80)]
    permission_to_send: PermissionToSend | None = None
    updated_at: datetime | None = None
    opt_in_source: Source | None = None
    opt_out_source: Source | None = None
    opt_out_date: datetime | None = None
    opt_out_reason: Str255 | None = None


class CustomField(msgspec.Struct, frozen=True, gc=False):
    custom_field_id: str
    value: Str255 | None = None


class PhoneNumber(msgspec.Struct, frozen=True, gc=False):
    phone_number: Annotated[str, msgspec.Meta(max_length=25)] | None = None
    kind: Literal["home", "work", "mobile", "other"] | None = None


class StreetAddress(msgspec.Struct, frozen=True, gc=False):
    kind: Literal["home", "work", "other"] | None = None
    street: Str255 | None = None
    city: Str50 | None = None
    state: Str50 | None = None
    postal_code: Str50 | None = None
    country: Str50 | None = None


class Contact(msgspec.Struct, frozen=True, gc=False):
    """A ContactResource as GET /contacts returns it with every ``include``.

    Only what normalisation and PUT bodies use is declared: notes, taggings, sources and
    creation times are skipped by the decoder, which keeps a 500-contact page cheap.
    """

    contact_id: str
    email_address: EmailAddress | None = None
    first_name: Str50 | None = None
    last_name: Str50 | None = None
    job_title: Str50 | None = None
    company_name: Str50 | None = None
    birthday_month: Annotated[int, msgspec.Meta(ge=1, le=12)] | None = None
    birthday_day: Annotated[int, msgspec.Meta(ge=1, le=31)] | None = None
    anniversary: Annotated[str, msgspec.Meta(max_length=10)] | None = None
    updated_at: datetime | None = None
    deleted_at: str | None = None  # a date (no time) per the spec; kept as text
    # Tuples, not lists: an empty one is a shared singleton and none is tracked by the cyclic
    # GC for long, which otherwise spends more time than normalisation on a 500-contact page.
    custom_fields: tuple[CustomField, ...] = ()
    phone_numbers: tuple[PhoneNumber, ...] = ()
    street_addresses: tuple[StreetAddress, ...] = ()
    list_memberships: tuple[str, ...] = ()


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


class ActivitiesPage(msgspec.Struct, frozen=True):
    """GET /activities: the account's bulk activities of the last 10 days, newest first."""

    activities: list[Activity] = []
    links: Links | None = msgspec.field(default=None, name="_links")


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


class ActivityStats(msgspec.Struct, frozen=True):
    """The counts of ``StatsEmailActivity`` that move when a report gains a record."""

    em_sends: int | None = None
    em_opens_all: int | None = None
    em_clicks_all: int | None = None
    em_bounces: int | None = None
    em_forwards: int | None = None
    em_optouts: int | None = None


class ActivityStatsResult(msgspec.Struct, frozen=True):
    campaign_activity_id: str
    stats: ActivityStats = ActivityStats()


class ActivityStatsPage(msgspec.Struct, frozen=True):
    """GET /reports/stats/email_campaign_activities/{ids}: ``errors`` name no id (a missing
    result is read as "no counts")."""

    results: list[ActivityStatsResult] = []


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
