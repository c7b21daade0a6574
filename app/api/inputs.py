"""Reading and validating request input for the JSON API.

Every failure raises `InputError`, answered as our JSON error shape with a
message naming the problem and, for field errors, marshmallow's per-field
messages in `details`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import current_app, request
from marshmallow import Schema, ValidationError


class InputError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def _load(schema: Schema, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        fields = (
            ", ".join(sorted(str(k) for k in exc.messages))
            if isinstance(exc.messages, dict)
            else ""
        )
        raise InputError(
            400,
            "invalid_request",
            f"the {what} is invalid" + (f" ({fields})" if fields else ""),
            exc.messages,
        ) from exc


def json_body(schema: Schema, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, validated. Bodies over API_MAX_BODY_BYTES are
    refused with 413 before they are read whole. With `optional`, an empty
    body counts as `{}`."""
    settings = current_app.extensions["authflow"].settings
    request.max_content_length = settings.api_max_body_bytes
    raw = request.get_data(cache=True)  # 413 past the limit
    if not raw.strip():
        if optional:
            return _load(schema, {}, "body")
        raise InputError(400, "missing_body", "send a JSON object as the request body")
    if request.mimetype != "application/json":
        raise InputError(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(400, "invalid_json", "the body must be a JSON object")
    return _load(schema, data, "body")


def query_args(schema: Schema) -> dict[str, Any]:
    repeated = [name for name in request.args if len(request.args.getlist(name)) > 1]
    if repeated:
        raise InputError(
            400,
            "invalid_request",
            f"query parameter {repeated[0]!r} is given more than once",
            {name: ["given more than once"] for name in repeated},
        )
    return _load(schema, request.args.to_dict(), "query string")


def path_value(name: str, value: str, validator, message: str) -> str:
    try:
        validator(value)
    except ValidationError as exc:
        raise InputError(400, f"invalid_{_snake(name)}", message, {name: exc.messages}) from exc
    return value


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
