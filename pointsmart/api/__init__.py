"""/api/v1: the JSON API for mini-programs, handheld scanners and county dashboards.

It calls the same services as the pages and adds no rules of its own. Every call carries a
bearer token (services/api_tokens.py) that acts through a user of its own, so the services'
scope checks apply unchanged. Every error has one envelope, ``{"error": {"code", "message",
"details"}}``, with a stable machine-readable code and a message in the caller's language
(Accept-Language). Writes take an ``Idempotency-Key`` header: the same key and body get the
original response again; the same key with another body gets 422.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from functools import wraps

import sqlalchemy as sa
from flask import Flask, Response, g, jsonify, request
from flask_babel import gettext as _
from flask_smorest import Api
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import ApiRequest, ApiToken, Role, User
from ..timeutil import utcnow

PREFIX = "/api/v1"
MAX_KEY_LENGTH = 100

#: The machine-readable code of each HTTP status, where no more precise code applies.
STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class PointSmartApi(Api):
    """flask-smorest's Api, leaving error handling to pointsmart.errors (one envelope)."""

    from .schemas import Error as ERROR_SCHEMA  # the envelope, documented for every error

    def _register_error_handlers(self):
        pass


api = PointSmartApi()


def is_api_request() -> bool:
    """Return whether the current request is an API call."""
    return request.path.startswith(PREFIX + "/") or request.path == PREFIX


def envelope(status: int, message: str, code: str | None = None, details=None) -> Response:
    """Return the API's one error response."""
    body = {"code": code or STATUS_CODES.get(status, "error"), "message": str(message)}
    if details is not None:
        body["details"] = details
    response = jsonify(error=body)
    response.status_code = status
    return response


class ApiError(Exception):
    """An API refusal that is not a domain rule: authentication, headers, paging."""

    def __init__(self, status: int, code: str, message: str, details=None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


# --- authentication ------------------------------------------------------------------------------


def current_token() -> ApiToken:
    """Return the token the current API call authenticated with."""
    return g.api_token


def current_user() -> User:
    """Return the user the current API call acts as (the token's own user)."""
    return g.api_token.user


def _bearer() -> ApiToken | None:
    from ..services import api_tokens

    header = request.headers.get("Authorization", "")
    scheme, _sep, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return api_tokens.authenticate(secret.strip())


def token_required(*roles: Role):
    """Let through calls with an active token holding one of ``roles`` (any role if none)."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            token = _bearer()
            if token is None:
                raise ApiError(
                    401,
                    "unauthenticated",
                    _("Send a valid API token: Authorization: Bearer <token>."),
                )
            if roles and not (token.user.roles & set(roles)):
                raise ApiError(403, "forbidden", _("This token's role cannot do this."))
            g.api_token = token
            now = utcnow()
            if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=5):
                token.last_used_at = now  # written with the call's own commit, not a new one
            return view(*args, **kwargs)

        wrapped.required_roles = roles
        return wrapped

    return decorator


# --- idempotency ---------------------------------------------------------------------------------


def idempotency_key(required: bool) -> str | None:
    """Return the call's Idempotency-Key header, checked. Raises ApiError."""
    if "Idempotency-Key" not in request.headers:
        if required:
            raise ApiError(
                400,
                "idempotency_key_missing",
                _("This call needs an Idempotency-Key header: a new random value per operation."),
            )
        return None
    key = request.headers["Idempotency-Key"].strip()
    # A header sent blank is a client's bug, not "no key": refusing it keeps a retry safe.
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            _(
                "The Idempotency-Key must be printable and at most %(max)s characters.",
                max=MAX_KEY_LENGTH,
            ),
        )
    return key


def service_key(key: str) -> str:
    """Return the business-event key a service gets for an API call's Idempotency-Key."""
    # Hashed: a key of any allowed length (and the prefixes services add) fits their columns.
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"api{g.api_token.id}:{digest}"


def _request_hash() -> str:
    try:
        body = json.dumps(request.get_json(silent=True), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        body = request.get_data(as_text=True)
    payload = f"{request.method} {request.path}\n{body}"
    return hashlib.sha256(payload.encode()).hexdigest()


def _stored(token: ApiToken, key: str) -> ApiRequest | None:
    return db.session.scalar(
        sa.select(ApiRequest).where(ApiRequest.token_id == token.id, ApiRequest.key == key)
    )


def _replay(record: ApiRequest, request_hash: str) -> Response:
    if record.request_hash != request_hash:
        raise ApiError(
            422,
            "idempotency_conflict",
            _(
                "This Idempotency-Key was used for another request; use a new key for a new operation."
            ),
        )
    response = jsonify(record.response)
    response.status_code = record.status
    response.headers["Idempotent-Replayed"] = "true"
    return response


def idempotent(required: bool = False):
    """Make a write replay its first response for the same key and body (422 for another body).

    Put it under ``token_required``; the wrapped view commits nothing itself: this decorator
    stores the response and commits once, or rolls back on any error.
    """

    def decorator(view):
        doc = getattr(view, "_apidoc", None)
        if doc is not None:  # document the header on the operation
            doc.setdefault("manual_doc", {}).setdefault("parameters", []).append(
                {
                    "in": "header",
                    "name": "Idempotency-Key",
                    "required": required,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                    "description": "A new random value per operation; a retry sends the same.",
                }
            )

        @wraps(view)
        def wrapped(*args, **kwargs):
            key = idempotency_key(required)
            if key is None:
                response = view(*args, **kwargs)
                db.session.commit()
                return response
            token, request_hash = g.api_token, _request_hash()
            record = _stored(token, key)
            if record is not None:
                return _replay(record, request_hash)
            g.idempotency_key = key
            response = view(*args, **kwargs)
            body = response.get_json(silent=True)
            if response.status_code < 500 and body is not None:
                try:
                    with db.session.begin_nested():
                        db.session.add(
                            ApiRequest(
                                token_id=token.id,
                                key=key,
                                request_hash=request_hash,
                                status=response.status_code,
                                response=body,
                            )
                        )
                        db.session.flush()
                except IntegrityError:  # a twin call with the same key finished first
                    db.session.rollback()
                    return _replay(_stored(token, key), request_hash)
            db.session.commit()
            return response

        return wrapped

    return decorator


def readable_body() -> None:
    """Refuse a JSON body that cannot be read at all. Raises ApiError (and BadRequest)."""
    try:
        request.get_json()  # kept by the request for the view and the Idempotency-Key's hash
    except RecursionError:  # nested deeper than Python parses: not a ValueError, so not a 400 yet
        raise ApiError(
            400, "bad_request", _("The request could not be read: send valid JSON.")
        ) from None


# --- paging --------------------------------------------------------------------------------------


def page_args(default_size: int = 50, max_size: int = 100) -> tuple[int, int]:
    """Return (page, per_page) from the query string. Raises ApiError for bad values."""

    def number(name: str, default: int, high: int) -> int:
        text = request.args.get(name)
        if text is None:
            return default
        if not text.isdigit() or not 1 <= int(text) <= high:
            raise ApiError(
                400,
                "invalid_paging",
                _("%(name)s must be a whole number from 1 to %(max)s.", name=name, max=high),
            )
        return int(text)

    return number("page", 1, 100_000), number("per_page", default_size, max_size)


def page_of(items: list, page: int, per_page: int, total: int) -> dict:
    """Return the paging envelope every list answers with."""
    return {"items": items, "page": page, "per_page": per_page, "total": total}


def init_app(app: Flask) -> None:
    """Bind the API and its OpenAPI document to the app; register the API blueprints."""
    from ..extensions import csrf
    from . import community, docs, households, shop, work

    app.config.setdefault("API_TITLE", "PointSmart API")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.1.0")
    app.config.setdefault("OPENAPI_URL_PREFIX", PREFIX)
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    api.init_app(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "An API token (ps_…)"}
    )
    for module in (households, shop, work, community):
        csrf.exempt(module.blp)  # bearer tokens are not sent by browsers on their own
        api.register_blueprint(module.blp)
    docs.finish_spec(api)
    app.register_blueprint(docs.bp)

    @app.before_request
    def _read_api_body():
        if is_api_request() and request.method in ("POST", "PUT", "PATCH") and request.is_json:
            readable_body()
