"""Validate bodies and requests against Constant Contact's own Swagger 2.0 file.

Other suites use it too::

    from tests.simulator.swagger import SwaggerSpec
    spec = SwaggerSpec.load()                       # parse the 689 KB file once per session
    spec.validate_response("GET", "/contacts", 200, body)
    spec.validate_request("GET", "http://127.0.0.1:1234/v3/contacts?limit=500&status=all")

Bodies are checked with jsonschema's Draft4Validator (Swagger 2.0 schemas are draft 4), with
``$ref: '#/definitions/...'`` resolved against the whole swagger document, and with format
checks for ``date-time``, ``date`` and ``uuid``. Requests are checked against the operation's
parameters: names, types, enums (item by item for csv), minimum/maximum, required ones, and
the body schema. ``cursor`` is accepted everywhere: the API puts it in ``_links.next.href``
although the spec does not list it. A few self-contradictions of the file (``maxItems: 0``
where the description says "up to 500") are patched on load; see ``_ERRATA``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import yaml

__all__ = ["DEFAULT_SWAGGER", "SpecViolation", "SwaggerSpec"]


def _find_swagger() -> Path:
    """Constant Contact's own API description, from the project's shared folder: beside the
    checkout (as CI lays it out), or where $CCSYNC_SWAGGER says."""
    if env := os.environ.get("CCSYNC_SWAGGER"):
        return Path(env)
    rel = Path("shared/reference/ctct-v3-swagger.yaml")
    repo = Path(__file__).resolve().parents[2]
    for base in (repo.parent, Path("/work")):
        if (base / rel).exists():
            return base / rel
    return repo.parent / rel  # reported as missing, with this path, when loaded


DEFAULT_SWAGGER: Final = _find_swagger()
_UUID: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_DATE_TIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$")
_ALWAYS_ALLOWED: Final = frozenset(("cursor",))

_formats = jsonschema.FormatChecker(())


@_formats.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@_formats.checks("date")
def _is_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


@_formats.checks("uuid")
def _is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.match(value) is not None


class SpecViolation(AssertionError):
    """A body or request that the spec does not allow; lists every problem."""


class SwaggerSpec:
    """The parsed swagger document, its operations and a validator per schema."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.base_path: str = doc.get("basePath", "/v3")
        self.definitions: dict[str, Any] = doc["definitions"]
        self._validators: dict[int, jsonschema.Draft4Validator] = {}
        # literal segments first, so /contacts/counts wins over /contacts/{contact_id}
        templates = sorted(doc["paths"], key=lambda p: (p.count("{"), -len(p)))
        self._paths = [
            (t, re.compile("^" + re.sub(r"\{([^}]+)\}", r"(?P<\1>[^/]+)", t) + "$"))
            for t in templates
        ]

    @classmethod
    def load(cls, path: Path = DEFAULT_SWAGGER) -> SwaggerSpec:
        """Parse the swagger file (cached: the file is parsed once per process)."""
        return _load(str(path))

    # responses ------------------------------------------------------------------------------
    def operation(self, method: str, template: str) -> dict[str, Any]:
        """The operation object; KeyError naming it when the spec has none."""
        try:
            op: dict[str, Any] = self.doc["paths"][template][method.lower()]
        except KeyError:
            raise KeyError(f"the spec has no operation {method.upper()} {template}") from None
        return op

    def _validator(self, schema: dict[str, Any]) -> jsonschema.Draft4Validator:
        key = id(schema)
        v = self._validators.get(key)
        if v is None:
            # The root carries the whole document's definitions, so '#/definitions/...' (at
            # any depth) resolves against it, as it does in the swagger file itself.
            root = {"$ref": "#/x-target", "x-target": schema, "definitions": self.definitions}
            v = jsonschema.Draft4Validator(root, format_checker=_formats)
            self._validators[key] = v
        return v

    def schema_errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        """Every way ``value`` breaks ``schema`` (path and message)."""
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in self._validator(schema).iter_errors(value)
        ]

    def validate_definition(self, name: str, value: Any) -> None:
        """Validate against ``#/definitions/<name>``."""
        errors = self.schema_errors({"$ref": f"#/definitions/{name}"}, value)
        if errors:
            raise SpecViolation(f"not a valid {name}:\n  " + "\n  ".join(errors[:20]))

    def validate_response(self, method: str, path_template: str, status: int, body: Any) -> None:
        """Check ``status`` is declared for the operation and ``body`` fits its schema."""
        template = self._strip_base(path_template)
        op = self.operation(method, template)
        response = op.get("responses", {}).get(str(status))
        if response is None:
            raise SpecViolation(f"{method.upper()} {template}: status {status} is not declared")
        schema = response.get("schema")
        if schema is None:
            return
        errors = self.schema_errors(schema, body)
        if errors:
            raise SpecViolation(
                f"{method.upper()} {template} {status}:\n  " + "\n  ".join(errors[:20])
            )

    # requests -------------------------------------------------------------------------------
    def _strip_base(self, path: str) -> str:
        return path[len(self.base_path) :] if path.startswith(self.base_path + "/") else path

    def match(self, path: str) -> tuple[str, dict[str, str]]:
        """The template a concrete path (with or without /v3) matches, and its path params."""
        rel = self._strip_base(path)
        for template, pattern in self._paths:
            m = pattern.match(rel)
            if m:
                return template, m.groupdict()
        raise SpecViolation(f"no path in the spec matches {path}")

    def request_errors(self, method: str, url: str, body: Any = None) -> list[str]:
        """Every way a request breaks the spec's parameters and body schema."""
        parts = urlsplit(url)
        template, path_params = self.match(parts.path)
        try:
            op = self.operation(method, template)
        except KeyError as exc:
            return [str(exc)]
        query: dict[str, list[str]] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(name, []).append(value)
        params = [*self.doc["paths"][template].get("parameters", []), *op.get("parameters", [])]
        errors: list[str] = []
        declared = {p["name"] for p in params if p.get("in") == "query"}
        for name in query:
            if name not in declared and name not in _ALWAYS_ALLOWED:
                errors.append(
                    f"query parameter {name!r} is not in the spec for {method.upper()} {template}"
                )
        for p in params:
            where, name = p.get("in"), p.get("name")
            if where == "query":
                values = query.get(name)
                if values is None:
                    if p.get("required"):
                        errors.append(f"query parameter {name!r} is required")
                    continue
                for value in values:
                    errors.extend(_param_errors(p, value))
            elif where == "path":
                errors.extend(_param_errors(p, path_params.get(name, "")))
            elif where == "body":
                if body is None:
                    if p.get("required"):
                        errors.append("a JSON body is required")
                else:
                    errors.extend(f"body: {e}" for e in self.schema_errors(p["schema"], body))
        return errors

    def validate_request(self, method: str, url: str, body: Any = None) -> None:
        """Raise SpecViolation listing every problem of the request."""
        errors = self.request_errors(method, url, body)
        if errors:
            raise SpecViolation(f"{method.upper()} {url}:\n  " + "\n  ".join(errors))


def _param_errors(p: Mapping[str, Any], value: str) -> list[str]:
    name = p["name"]
    kind = p.get("type", "string")
    items = p.get("items") or {}
    is_list = kind == "array" or p.get("format") == "csv" or "collectionFormat" in p
    values = value.split(",") if is_list else [value]
    errors: list[str] = []
    enum = p.get("enum") or items.get("enum")
    if kind == "string" and "maximum" in p and "," in value and len(values) > p["maximum"]:
        errors.append(f"{name}: {len(values)} items, at most {p['maximum']}")
    for v in values:
        if enum is not None and v not in enum:
            errors.append(f"{name}: {v!r} is not one of {enum}")
        if kind == "integer" or (kind == "string" and "minimum" in p and v.lstrip("-").isdigit()):
            try:
                number = int(v)
            except ValueError:
                errors.append(f"{name}: {v!r} is not an integer")
                continue
            if "minimum" in p and number < p["minimum"]:
                errors.append(f"{name}: {number} is below the minimum {p['minimum']}")
            if "maximum" in p and number > p["maximum"]:
                errors.append(f"{name}: {number} is above the maximum {p['maximum']}")
        elif kind == "boolean" and v not in ("true", "false"):
            errors.append(f"{name}: {v!r} is not true or false")
        fmt = p.get("format")
        if fmt == "date-time" and not _is_date_time(v):
            errors.append(f"{name}: {v!r} is not an ISO-8601 date-time")
        if fmt == "uuid" and kind == "string" and "maximum" not in p and not _is_uuid(v):
            errors.append(f"{name}: {v!r} is not a UUID")
        if "maxLength" in p and len(v) > p["maxLength"]:
            errors.append(f"{name}: longer than {p['maxLength']} characters")
    return errors


# Errata: places where the file contradicts its own descriptions. Each one is patched to
# what the description says, so correct requests are not rejected; nothing else is changed.
_ERRATA: Final = (
    # "Include up to 500 contact_id values" / "up to 50 list_id values", but maxItems: 0
    (("ListActivityRemoveContacts", "properties", "source", "properties", "contact_ids"), 500),
    (("ListActivityRemoveContacts", "properties", "source", "properties", "list_ids"), 50),
    (("ListActivityRemoveContacts", "properties", "source", "properties", "tag_ids"), 50),
    (("ListActivityRemoveContacts", "properties", "list_ids"), 50),
    (("ListActivityAddContacts", "properties", "source", "properties", "tag_ids"), 50),
)


def _apply_errata(doc: dict[str, Any]) -> None:
    for path, max_items in _ERRATA:
        node: Any = doc["definitions"]
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get("maxItems") == 0:
            node["maxItems"] = max_items


@cache
def _load(path: str) -> SwaggerSpec:
    with open(path, "rb") as fh:
        doc = yaml.load(fh, Loader=yaml.CSafeLoader)
    _apply_errata(doc)
    return SwaggerSpec(doc)
