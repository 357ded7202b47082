"""Security headers on every kind of response."""

from __future__ import annotations

from pointsmart.extensions import db
from pointsmart.models import Role
from tests.conftest import login


def test_pages_forbid_framing_sniffing_and_foreign_or_inline_script(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "camera=(self)" in response.headers["Permissions-Policy"]


def test_hsts_only_over_https(client):
    assert "Strict-Transport-Security" not in client.get("/login").headers
    secure = client.get("/login", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_logged_in_pages_are_not_cached(client, make):
    user = make.staff(Role.CADRE, make.village())
    db.session.commit()
    login(client, user)
    assert client.get("/cadre/").headers["Cache-Control"] == "no-store"
    # Only pages: a JSON document (or a photo, a stylesheet) keeps its own caching.
    api_doc = client.get("/api/v1/openapi.json")
    assert "no-store" not in api_doc.headers.get("Cache-Control", "")


def test_the_api_document_page_alone_allows_inline_styles(client):
    assert "'unsafe-inline'" in client.get("/api/v1/docs").headers["Content-Security-Policy"]
    assert client.get("/api/v1/openapi.json").headers["X-Content-Type-Options"] == "nosniff"


def test_no_template_has_inline_script_or_style():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "pointsmart" / "templates"
    offenders = []
    pattern = re.compile(
        r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:", re.I
    )
    for path in root.rglob("*.html"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()[:80]}")
    assert offenders == [], "inline script or style breaks the CSP:\n" + "\n".join(offenders)
