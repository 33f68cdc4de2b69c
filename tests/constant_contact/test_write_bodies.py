"""Write bodies: imports carry only the given fields; PUT carries every current core field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from adapters.constant_contact.schema import Contact
from adapters.constant_contact.write_bodies import (
    MAX_IMPORT_BYTES,
    MAX_IMPORT_ROWS,
    encode_row,
    import_batches,
    import_row,
    put_body,
)
from engine.errors import SkippableRecordError

CURRENT: dict[str, Any] = {
    "contact_id": "c-1",
    "email_address": {"address": "ann@x.org", "permission_to_send": "implicit"},
    "first_name": "Ann",
    "last_name": "Lee",
    "job_title": "CTO",
    "company_name": "Acme",
    "birthday_month": 11,
    "birthday_day": 24,
    "anniversary": "2006-11-15",
    "phone_numbers": [{"phone_number": "555-1", "kind": "home"}],
    "street_addresses": [{"kind": "home", "street": "1 Main", "city": "Chicago"}],
    "custom_fields": [{"custom_field_id": "cf-1", "value": "gold"}],
}


def test_import_row_has_only_email_and_given_fields_and_never_permission() -> None:
    row = import_row(
        "c-1",
        "ann@x.org",
        {"first_name": "Annie", "phone_mobile": "555-2", "cf:cf-1": "silver", "birthday_day": "3"},
        {"cf-1": "tier"},
    )
    assert row == {
        "email": "ann@x.org",
        "first_name": "Annie",
        "mobile_phone": "555-2",
        "cf:tier": "silver",
        "birthday_day": 3,
    }


def test_import_row_refuses_unknown_fields_and_long_emails_by_name() -> None:
    with pytest.raises(SkippableRecordError) as info:
        import_row("c-1", "ann@x.org", {"shoe_size": "9"}, {})
    assert info.value.field == "shoe_size"
    with pytest.raises(SkippableRecordError) as info:
        import_row("c-1", "a" * 45 + "@x.org", {}, {})
    assert info.value.field == "email"


def test_import_batches_respect_row_and_byte_limits() -> None:
    rows = [(i, encode_row({"email": f"p{i}@x.org"})) for i in range(MAX_IMPORT_ROWS + 10)]
    batches = list(import_batches(rows))
    assert [len(b) for b in batches] == [MAX_IMPORT_ROWS, 10]
    big = encode_row({"email": "a@x.org", "first_name": "x" * 50_000})
    batches = list(import_batches((i, big) for i in range(200)))
    assert all(len(b) * (len(big) + 1) <= MAX_IMPORT_BYTES for b in batches)
    assert sum(len(b) for b in batches) == 200


def test_put_body_carries_every_core_field_so_nothing_is_nulled() -> None:
    body = put_body(
        msgspec.convert(CURRENT, Contact),
        update_source="Contact",
        permission_to_send="unsubscribed",
        opt_out_reason="asked to stop",
    )
    assert body["email_address"] == {
        "address": "ann@x.org",
        "permission_to_send": "unsubscribed",
        "opt_out_reason": "asked to stop",
    }
    for field in ("first_name", "last_name", "job_title", "company_name", "anniversary"):
        assert body[field] == CURRENT[field]
    assert (body["birthday_month"], body["birthday_day"]) == (11, 24)
    assert body["phone_numbers"] == [{"phone_number": "555-1", "kind": "home"}]
    assert body["street_addresses"] == [{"kind": "home", "street": "1 Main", "city": "Chicago"}]
    assert body["custom_fields"] == [{"custom_field_id": "cf-1", "value": "gold"}]
    assert body["update_source"] == "Contact"


def test_put_body_applies_changes_and_clears() -> None:
    body = put_body(
        msgspec.convert(CURRENT, Contact),
        update_source="Account",
        changes={"job_title": None, "address_home_city": "Boston", "phone_home": None},
        new_email="ann@new.org",
    )
    assert "job_title" not in body
    assert body["first_name"] == "Ann"
    assert body["email_address"]["address"] == "ann@new.org"
    assert "permission_to_send" not in body["email_address"]  # an upsert never touches it
    assert body["street_addresses"] == [{"kind": "home", "street": "1 Main", "city": "Boston"}]
    assert body["phone_numbers"] == []
