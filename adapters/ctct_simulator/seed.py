"""Seed an account deterministically: the same seed gives the same contacts, ids and history.

Built for speed (a million contacts in seconds): one seeded random stream, small name pools,
and contact objects filled in directly rather than through the change methods.
"""

from __future__ import annotations

import gc
import random
from typing import Final

from adapters.ctct_simulator.account import Account
from adapters.ctct_simulator.contact import Contact, Phone, StreetAddress

__all__ = ["seed_account"]

FIRST: Final = (
    "Ann",
    "Ben",
    "Cara",
    "Dan",
    "Eve",
    "Finn",
    "Gia",
    "Hugo",
    "Ida",
    "Jon",
    "Kai",
    "Lena",
    "Milo",
    "Nora",
    "Omar",
    "Pia",
    "Quin",
    "Rosa",
    "Sam",
    "Tara",
    "Uma",
    "Vic",
    "Wes",
    "Xena",
)
LAST: Final = (
    "Adams",
    "Baker",
    "Chen",
    "Diaz",
    "Evans",
    "Fox",
    "Garcia",
    "Hughes",
    "Ito",
    "Jones",
    "Khan",
    "Lopez",
    "Meyer",
    "Nagy",
    "Olsen",
    "Patel",
    "Quist",
    "Rossi",
    "Smith",
    "Tran",
)
DOMAINS: Final = ("example.com", "example.org", "mail.example.net", "corp.example")
COMPANIES: Final = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne")
TITLES: Final = ("Director", "Engineer", "Manager", "Owner", "Volunteer", "Analyst")
CUSTOM_FIELDS: Final = (("Tier", "string"), ("Member since", "date"))
REASONS: Final = ("too many emails", "not relevant", "never signed up", None)
_YEAR_MS: Final = 365 * 24 * 3600 * 1000


def seed_account(account: Account, contacts: int, lists: int, seed: int) -> None:
    """Fill ``account`` with ``lists`` lists and ``contacts`` contacts, spread over two years."""
    # Millions of new objects would trigger full cyclic-GC passes over everything built so
    # far; none of them form cycles, so the collector is paused while they are made.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _seed(account, contacts, lists, seed)
    finally:
        if was_enabled:
            gc.enable()


def _seed(account: Account, contacts: int, lists: int, seed: int) -> None:
    rng = random.Random(f"seed:{seed}")
    now = account.clock.now_ms()
    for label, kind in CUSTOM_FIELDS:
        account.add_custom_field(label, kind).created_at = now - 2 * _YEAR_MS
    cf_ids = list(account.custom_fields.values())
    for i in range(lists):
        lst = account.add_list(f"List {i + 1}", description=f"Seeded list {i + 1}")
        lst.created_at = lst.updated_at = now - 2 * _YEAR_MS + i * 1000
    list_ids = list(account.lists)
    new_id = account.new_id
    rand = rng.random

    def randrange(n: int) -> int:
        # int(random() * n): several times cheaper than Random.randrange, still seeded
        return int(rand() * n)

    span = 2 * _YEAR_MS
    start = now - span
    step = span // max(contacts, 1)
    built: list[Contact] = []
    append = built.append
    base = len(account.contacts)
    for i in range(contacts):
        first = FIRST[randrange(len(FIRST))]
        last = LAST[randrange(len(LAST))]
        email = f"{first.lower()}.{last.lower()}{i}@{DOMAINS[i & 3]}"
        created = start + i * step + randrange(max(step, 1))
        source = "Contact" if rand() < 0.6 else "Account"
        c = Contact(base + i, new_id(), email, created, source)
        c.first_name = first
        c.last_name = last
        r = rand()
        if r < 0.4:
            c.company_name = COMPANIES[randrange(len(COMPANIES))]
            c.job_title = TITLES[randrange(len(TITLES))]
        if r < 0.1:
            c.birthday_month = 1 + randrange(12)
            c.birthday_day = 1 + randrange(28)
        updated = created + int(rand() * (now - created) * 0.5)
        c.updated_at = updated
        p = rand()
        if p < 0.25:
            c.permission = "explicit"
            c.opt_in_source = "Contact"
        elif p < 0.9:
            c.permission = "implicit"
        elif p < 0.97:
            c.permission = "unsubscribed"
            c.opt_out_source = "Contact" if rand() < 0.8 else "Account"
            out_at = updated + int(rand() * (now - updated) * 0.9)
            c.opt_out_date = out_at
            c.opt_out_reason = REASONS[randrange(len(REASONS))]
            c.email_updated_at = out_at
        else:
            c.permission = "not_set"
            c.opt_in_source = None
            c.opt_in_date = None
        if list_ids:
            k = randrange(4)
            if k:
                c.lists = tuple(sorted({list_ids[randrange(len(list_ids))] for _ in range(k)}))
        if rand() < 0.3:
            c.phones = (
                Phone(
                    phone_number_id=new_id(),
                    phone_number=f"+1-555-{randrange(1000):03d}-{randrange(10000):04d}",
                    kind="mobile",
                    created_at=created,
                    updated_at=created,
                    source=source,
                ),
            )
        if rand() < 0.15:
            c.addresses = (
                StreetAddress(
                    street_address_id=new_id(),
                    kind="home",
                    street=f"{1 + randrange(999)} Main St",
                    city="Springfield",
                    state="IL",
                    postal_code=f"{60000 + randrange(1000)}",
                    country="United States",
                    created_at=created,
                    updated_at=created,
                ),
            )
        if rand() < 0.2:
            c.custom_fields = ((cf_ids[0], ("gold", "silver", "bronze")[randrange(3)]),)
        if rand() < 0.02:
            c.deleted_at = updated
            c.lists = ()
        append(c)
    account.register_seeded(built)
