"""The one idiom of every `/api` operation, on flask-smorest.

A view declares its inputs with `@bp.arguments(Schema, location=...)` (path
parameters with `@bp.path(Schema)`), its answers with `@bp.response(...)`
and its documented errors with `@bp.errors(...)`; `/api/openapi.json` is
built from those same decorators. `ApiParser` reads every input the same way
and refuses bad input with our error shape (`app.errors`), never webargs'
422:

| input | refused with |
| --- | --- |
| body over API_MAX_BODY_BYTES | 413 `request_entity_too_large` |
| empty body where the schema requires a field | 400 `missing_body` |
| body not `application/json` | 415 `unsupported_media_type` |
| body not a JSON object | 400 `invalid_json` |
| a body field | 400 `invalid_request` |
| a query parameter, or one given twice | 400 `invalid_query` |
| a path parameter such as companyId | 400 `invalid_company_id` |

`details` maps each bad field (by its JSON name) to marshmallow's messages.
"""

from __future__ import annotations

import json
import re
from typing import Any

import flask_smorest
from flask import current_app, request
from flask_smorest.spec.plugins import FlaskPlugin
from marshmallow import Schema, ValidationError, fields
from webargs.flaskparser import FlaskParser

from app.api import schemas
from app.errors import ApiError

PREFIX = "/api"

ERROR_RESPONSES = {
    400: "The request is malformed; `details` names each bad field",
    401: "Missing or wrong bearer token",
    402: "A limit of the Codat plan is reached (e.g. companies); `message` and "
    "`details.codatMessage` carry Codat's explanation",
    404: "Unknown company, connection, platform or subscription",
    409: "The request conflicts with the company's current connections or state",
    413: "The body is larger than API_MAX_BODY_BYTES",
    415: "The body is not application/json",
    502: "Codat refused the call, failed, or answered outside its own schema; "
    "`details` has Codat's status, message and correlation id",
    503: "CODAT_API_KEY is not configured, Redis is unreachable, or Codat's rate limit is "
    "reached (`codat_rate_limited`, with `Retry-After` in seconds)",
    504: "Codat did not answer in time; nothing was changed",
}


def camel(name: str) -> str:
    """`company_id` -> `companyId` (URL variables are snake_case, the API camelCase)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _first_message(messages: Any) -> str:
    if isinstance(messages, dict):
        for value in messages.values():
            return _first_message(value)
        return "invalid"
    if isinstance(messages, list | tuple) and messages:
        return _first_message(messages[0])
    return str(messages)


def _summary(messages: Any) -> str:
    if not isinstance(messages, dict):
        return _first_message(messages)
    return "; ".join(f"{name}: {_first_message(value)}" for name, value in messages.items())


def limit_body() -> None:
    """`before_request` of `/api`: bodies are limited to API_MAX_BODY_BYTES, refused
    whole when Content-Length says so, else as soon as a read passes the limit."""
    limit = current_app.extensions["authflow"].settings.api_max_body_bytes
    request.max_content_length = limit
    if (request.content_length or 0) > limit:
        raise ApiError(
            413,
            "request_entity_too_large",
            f"bodies are limited to {limit} bytes (API_MAX_BODY_BYTES)",
        )


class ApiParser(FlaskParser):
    """webargs' parser, reading input by our rules (see the module's table)."""

    DEFAULT_VALIDATION_STATUS = 400

    def load_json(self, req, schema: Schema) -> Any:
        raw = req.get_data(cache=True)  # 413 once past request.max_content_length
        if not raw.strip():
            required = any(field.required for field in schema.fields.values())
            if required or getattr(schema, "BODY_REQUIRED", False):
                raise ApiError(400, "missing_body", "send a JSON object as the request body")
            return {}  # a body with no required field may be left out
        if req.mimetype != "application/json":
            raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        return data

    def load_querystring(self, req, schema: Schema) -> Any:
        lists = {f.data_key or n for n, f in schema.fields.items() if isinstance(f, fields.List)}
        repeated = sorted(
            name for name in req.args if name not in lists and len(req.args.getlist(name)) > 1
        )
        if repeated:
            raise ApiError(
                400,
                "invalid_query",
                f"query parameter {repeated[0]!r} is given more than once",
                {name: ["given more than once"] for name in repeated},
            )
        return self._makeproxy(req.args, schema)

    def load_view_args(self, req, schema: Schema) -> Any:
        return {camel(name): value for name, value in (req.view_args or {}).items()}

    def handle_error(self, error: ValidationError, req, schema: Schema, **_: Any):
        ((location, messages),) = error.messages.items()
        if not isinstance(messages, dict):
            messages = {"_schema": messages}
        if location in ("path", "view_args"):
            order = [f.data_key or n for n, f in schema.fields.items()]
            name = min(messages, key=lambda k: order.index(k) if k in order else len(order))
            raise ApiError(
                400,
                f"invalid_{snake(name)}",
                f"{name} is invalid: {_first_message(messages[name])}",
                {name: messages[name]},
            )
        if location in ("query", "querystring"):
            raise ApiError(
                400, "invalid_query", f"the query string is invalid: {_summary(messages)}", messages
            )
        raise ApiError(
            400, "invalid_request", f"the body is invalid: {_summary(messages)}", messages
        )


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with our parser; operations are tagged with the
    blueprint's name unless they say otherwise."""

    ARGUMENTS_PARSER = ApiParser(unknown=None)  # unknown fields: as each schema says (RAISE)

    def route(self, rule, *, parameters=None, tags=None, **options):
        return super().route(rule, parameters=parameters, tags=tags or [self.name], **options)

    def path(self, schema: type[Schema]):
        """Validate the URL's variables; the view keeps receiving them as keyword
        arguments (the schema's attribute names are the URL's variable names)."""
        return self.arguments(schema, location="path", as_kwargs=True)

    def errors(self, *statuses: int):
        """Document the error answers an operation may give (all in our shape)."""

        def decorator(func):
            for status in sorted(statuses):
                func = self.alt_response(
                    status, schema=schemas.Error, description=ERROR_RESPONSES[status]
                )(func)
            return func

        return decorator


class ApiPaths(FlaskPlugin):
    """Paths relative to the `/api` server, with camelCase path parameters:
    `/api/companies/<company_id>` is documented as `/companies/{companyId}`."""

    def rule_to_params(self, rule):
        params = super().rule_to_params(rule)
        for param in params:
            param["name"] = camel(param["name"])
        return params

    def path_helper(self, rule, operations, parameters, **kwargs):
        path = super().path_helper(rule, operations, parameters, **kwargs)
        path = re.sub(r"{([^}]+)}", lambda m: "{" + camel(m[1]) + "}", path)
        return path.removeprefix(PREFIX) or "/"


class Api(flask_smorest.Api):
    """flask-smorest's Api, documenting errors in our shape and leaving every
    error's answer to `app.errors` (one error shape for the whole app)."""

    ERROR_SCHEMA = schemas.Error

    def _register_error_handlers(self) -> None:
        pass
