"""Errors the simulated API answers with, in Constant Contact's own shapes.

Validation, not-found and conflict errors are JSON arrays of ``{error_key, error_message}``;
401 and 429 are single objects (the shapes clients must tell apart).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "Conflict",
    "Invalid",
    "NotFound",
    "SingleObjectError",
    "error_body",
]


class ApiError(Exception):
    """An answer other than success: status, error key and message."""

    single_object = False

    def __init__(self, status: int, error_key: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_key = error_key
        self.message = message

    def body(self) -> Any:
        """The JSON body of the answer."""
        item = {"error_key": self.error_key, "error_message": self.message}
        return item if self.single_object else [item]


class Invalid(ApiError):
    """400: the request or one of its fields is invalid."""

    def __init__(self, message: str, key: str = "contacts.api.validation.error") -> None:
        super().__init__(400, key, message)


class NotFound(ApiError):
    """404: the resource does not exist (or is not visible)."""

    def __init__(self, message: str, key: str = "contacts.api.not_found") -> None:
        super().__init__(404, key, message)


class Conflict(ApiError):
    """409: the write clashes with existing state."""

    def __init__(self, message: str, key: str = "contacts.api.conflict") -> None:
        super().__init__(409, key, message)


class SingleObjectError(ApiError):
    """401 and 429 answers: one object, not an array."""

    single_object = True


def error_body(status: int, key: str, message: str) -> list[dict[str, str]]:
    """An array-shaped error body."""
    return [{"error_key": key, "error_message": message}]
