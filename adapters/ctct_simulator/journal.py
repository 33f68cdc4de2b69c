"""The request journal: every request the simulator received, with its query and body.

Off by default (bodies of large imports would cost memory in benchmarks); a test switches it on
with ``Simulator.start_journal()`` and reads ``Simulator.journal`` to check what a client sent
(method, path, query parameters, JSON body), without mocks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec

__all__ = ["RecordedRequest"]


class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request as the simulator received it, before authentication and faults."""

    method: str
    path: str  # e.g. "/v3/contacts/8f0e..."
    endpoint: str  # the route, as ``Simulator.requests`` counts it: "PUT /v3/contacts/{contact_id}"
    query_string: str = ""
    body: bytes = b""

    @property
    def params(self) -> dict[str, str]:
        """The query parameters (a repeated name keeps its last value)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self) -> Any:
        """The body decoded as JSON (None when there is no body)."""
        return msgspec.json.decode(self.body) if self.body else None
