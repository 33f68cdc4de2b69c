"""ContactResource JSON -> ContactRecord; bad records rejected by contact_id and field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from adapters.constant_contact.normalise import ContactNormaliser, normalise_contact
from adapters.constant_contact.observe import decode_contacts
from engine.model import ContactRecord
from engine.ports import Rejected

FULL: dict[str, Any] = {
    "contact_id": "c-1",
    "email_address": {
        "address": " Ann@Example.ORG ",
        "permission_to_send": "unsubscribed",
        "updated_at": "2026-04-02T10:00:00Z",
        "opt_in_source": "Account",
        "opt_out_source": "Contact",
        "opt_out_date": "2026-04-02T10:00:00Z",
        "opt_out_reason": "too many emails",
    },
    "first_name": "Ann",
    "last_name": "Lee",
    "job_title": "CTO",
    "company_name": "Acme",
    "birthday_month": 11,
    "birthday_day": 24,
    "anniversary": "2006-11-15",
    "updated_at": "2026-04-01T09:00:00Z",
    "created_at": "2020-01-01T00:00:00Z",
    "custom_fields": [{"custom_field_id": "cf-9", "value": "gold"}],
    "phone_numbers": [{"phone_number": "555-1", "kind": "mobile"}],
    "street_addresses": [{"kind": "work", "street": "1 Main", "city": "Chicago", "country": "US"}],
    "list_memberships": ["l-2", "l-1"],
    "taggings": [],
    "notes": [],
    "some_new_api_field": {"ignored": True},
}


def rec(data: dict[str, Any]) -> ContactRecord | Rejected:
    """As observation sees it: one page decoded, then its records normalised."""
    batch = decode_contacts(msgspec.json.encode({"contacts": [data]}))
    if batch.undecodable:
        return batch.undecodable[0]
    return normalise_contact(batch.contacts[0])


def test_full_contact_maps_to_flat_fields_and_permission() -> None:
    r = rec(FULL)
    assert isinstance(r, ContactRecord)
    assert r.email == "ann@example.org"
    assert r.fields == {
        "first_name": "Ann",
        "last_name": "Lee",
        "job_title": "CTO",
        "company_name": "Acme",
        "birthday_month": "11",
        "birthday_day": "24",
        "anniversary": "2006-11-15",
        "phone_mobile": "555-1",
        "address_work_street": "1 Main",
        "address_work_city": "Chicago",
        "address_work_country": "US",
        "cf:cf-9": "gold",
    }
    assert r.permission.status == "unsubscribed"
    assert r.permission.source == "Contact"
    assert r.permission.reason == "too many emails"
    assert r.lists == ("l-1", "l-2")
    # updated_at is the later of the contact's and its email's (pitfall 1)
    assert r.updated_at == datetime(2026, 4, 2, 10, tzinfo=UTC)
    assert not r.deleted


def test_deleted_contact_is_marked_deleted() -> None:
    r = rec({**FULL, "deleted_at": "2026-04-03"})
    assert isinstance(r, ContactRecord) and r.deleted


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"email_address": {**FULL["email_address"], "address": "not-an-email"}},
            "email_address.address",
        ),
        (
            {"email_address": {**FULL["email_address"], "permission_to_send": "maybe"}},
            "email_address.permission_to_send",
        ),
        ({"first_name": "x" * 51}, "first_name"),
        ({"phone_numbers": [{"phone_number": "1", "kind": "fax"}]}, "phone_numbers[0].kind"),
        ({"birthday_month": 13}, "birthday_month"),
        ({"email_address": None}, "email_address.address"),
    ],
)
def test_invalid_records_are_rejected_naming_contact_and_field(
    change: dict[str, Any], field: str
) -> None:
    r = rec({**FULL, **change})
    assert isinstance(r, Rejected)
    assert r.record == "c-1"
    assert r.field == field
    assert "c-1" in r.raw


def test_a_page_with_one_undecodable_record_keeps_the_others() -> None:
    good = {**FULL, "contact_id": "c-2"}
    bad = {**FULL, "contact_id": "c-3", "birthday_month": "eleven"}
    body = msgspec.json.encode({"contacts": [good, bad], "_links": {"next": {"href": "/v3/x"}}})
    batch = decode_contacts(body)
    assert [c.contact_id for c in batch.contacts] == ["c-2"]
    assert [(r.record, r.field) for r in batch.undecodable] == [("c-3", "birthday_month")]
    assert batch.next == "/v3/x"


def test_a_cut_off_page_is_a_decode_error_not_rejections() -> None:
    body = msgspec.json.encode({"contacts": [FULL]})
    with pytest.raises(msgspec.DecodeError):
        decode_contacts(body[:-10])


def test_one_page_keeps_good_records_in_order_and_rejects_bad_emails() -> None:
    contacts = [
        {**FULL, "contact_id": "c-1", "list_memberships": ["l-3", "l-1", "l-3"]},
        {**FULL, "contact_id": "c-2", "email_address": {"address": "nobody@nowhere"}},
        {**FULL, "contact_id": "c-3", "custom_fields": [], "phone_numbers": []},
    ]
    batch = decode_contacts(msgspec.json.encode({"contacts": contacts}))
    records, rejected = ContactNormaliser().page(batch.contacts)
    assert [r.store_id for r in records] == ["c-1", "c-3"]
    assert records[0].lists == ("l-1", "l-3")  # sorted, a repeated id once
    assert "cf:cf-9" in records[0].fields and "cf:cf-9" not in records[1].fields
    assert [(r.record, r.field) for r in rejected] == [("c-2", "email_address.address")]
    assert "nobody@nowhere" in rejected[0].problem


def test_memberships_and_custom_fields_stay_right_past_the_shared_cache_bound() -> None:
    # More distinct memberships and custom fields than the normaliser keeps shared keys for.
    n = 5000
    contacts = [
        {
            "contact_id": f"c-{i}",
            "email_address": {"address": f"p{i}@example.org"},
            "list_memberships": [f"l-{i}", "l-0"],
            "custom_fields": [{"custom_field_id": f"f-{i}", "value": str(i)}],
        }
        for i in range(1, n + 1)
    ]
    batch = decode_contacts(msgspec.json.encode({"contacts": contacts}))
    normaliser = ContactNormaliser()
    records, rejected = normaliser.page(batch.contacts)
    again, _ = normaliser.page(batch.contacts)
    assert not rejected and len(records) == n
    for i, (r, r2) in enumerate(zip(records, again, strict=True), start=1):
        assert r.lists == r2.lists == tuple(sorted((f"l-{i}", "l-0")))
        assert r.fields == r2.fields == {f"cf:f-{i}": str(i)}
