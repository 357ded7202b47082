"""Response headers that keep pages from being framed, sniffed, cached or scripted from elsewhere.

The pages have no inline script or style, so the Content-Security-Policy forbids both; the API's
document page (vendored Redoc) alone needs inline styles and a blob worker. Form fields and query
strings arrive without NUL characters, and no URL part holds one (see Parameters).
"""

from __future__ import annotations

import flask
from flask import Flask, request
from flask_login import current_user
from werkzeug.datastructures import FileStorage, ImmutableMultiDict, MultiDict
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import UnicodeConverter

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def _without_nul(value):
    if isinstance(value, FileStorage) and value.filename:
        value.filename = value.filename.replace("\x00", "")  # kept in the roster's audit entry
    return value.replace("\x00", "") if isinstance(value, str) else value


class Parameters(ImmutableMultiDict):
    """Form fields and query-string values with any NUL character dropped.

    Nobody types one, and PostgreSQL cannot store one: left in, a NUL in any field would fail
    the request inside the database instead of meeting the form's own checks.
    """

    def __init__(self, mapping=None):
        if mapping is not None:
            mapping = [
                (_without_nul(key), _without_nul(value))
                for key, value in MultiDict(mapping).items(multi=True)
            ]
        super().__init__(mapping)


class Request(flask.Request):
    parameter_storage_class = Parameters


class TextConverter(UnicodeConverter):
    """A <name> URL part: no "/" and no NUL (a token with a NUL is no token: 404)."""

    def __init__(self, map, *args, **kwargs):
        super().__init__(map, *args, **kwargs)
        self.regex = self.regex.replace("[^/]", "[^/\\x00]", 1)


def init_app(app: Flask) -> None:
    app.request_class = Request
    app.url_map.converters["default"] = app.url_map.converters["string"] = TextConverter
    if app.config.get("PROXY_FIX"):
        # Behind one reverse proxy that sets X-Forwarded-For and -Proto (README: production).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)

    @app.after_request
    def headers(response):
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Permissions-Policy", "camera=(self), microphone=(), geolocation=()")
        docs = request.path.rstrip("/") == "/api/v1/docs"
        h.setdefault("Content-Security-Policy", DOCS_CSP if docs else CSP)
        if request.is_secure and app.config.get("HSTS_SECONDS"):
            h.setdefault(
                "Strict-Transport-Security",
                f"max-age={app.config['HSTS_SECONDS']}; includeSubDomains",
            )
        # A page with someone's points must not stay in a shared or back-button cache.
        if (
            response.mimetype == "text/html"
            and "Cache-Control" not in h
            and current_user
            # Not is_authenticated: that reads is_active, reloading the user after the commit.
            and not current_user.is_anonymous
        ):
            h["Cache-Control"] = "no-store"
        return response
