"""Response headers that keep pages from being framed, sniffed, cached or scripted from elsewhere.

The pages have no inline script or style, so the Content-Security-Policy forbids both; the API's
document page (vendored Redoc) alone needs inline styles and a blob worker.
"""

from __future__ import annotations

from flask import Flask, request
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

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


def init_app(app: Flask) -> None:
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
            and current_user.is_authenticated
        ):
            h["Cache-Control"] = "no-store"
        return response
