"""Request safety over the whole URL map: every POST needs its CSRF token, no GET changes data.

Routes come from the URL map (as in the access matrix), so a new route is covered at once.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pointsmart import create_app
from pointsmart.extensions import db
from tests.conftest import app_config, login
from tests.test_access_matrix import (
    ANY_USER,
    ANYONE,
    EXPECTED,
    LOGIN_PAGE,
    RULES,
    build_place,
    url_for_place,
)

#: Tables a request may write to without changing anything a person did: sessions and
#: the token's last-use time are bookkeeping.
BOOKKEEPING = {"login_sessions", "api_tokens", "alembic_version"}


def snapshot() -> dict[str, int]:
    """Return every table's row count, and the sum of all balances and stock."""
    counts = {
        table.name: db.session.scalar(sa.select(sa.func.count()).select_from(table))
        for table in db.metadata.sorted_tables
        if table.name not in BOOKKEEPING
    }
    counts["balances"] = db.session.scalar(
        sa.text("SELECT COALESCE(SUM(balance), 0) FROM accounts")
    )
    counts["stock"] = db.session.scalar(sa.text("SELECT COALESCE(SUM(stock), 0) FROM shop_items"))
    db.session.rollback()
    return counts


def who_may(access, place):
    """Return the users of the place allowed to use a route (one is enough)."""
    if access in (ANY_USER, ANYONE):
        return [next(iter(place.users.values()))]
    if access == LOGIN_PAGE:
        return []
    if isinstance(access, frozenset):
        return [place.users[role] for role in sorted(access)]
    return []


@pytest.fixture
def csrf_app(migrated):
    """The test app with CSRF protection on, as in production."""
    app = create_app(app_config(migrated, WTF_CSRF_ENABLED=True))
    with app.app_context():
        yield app
        from tests.conftest import empty_tables

        db.session.remove()
        empty_tables()
        db.engine.dispose()


POSTS = [
    r for r in RULES if "POST" in r.methods and r.endpoint not in ("auth.login", "auth.staff_login")
]
GETS = [r for r in RULES if "GET" in r.methods]


@pytest.mark.parametrize("rule", POSTS, ids=lambda r: r.endpoint)
def test_every_post_is_refused_without_its_csrf_token(csrf_app, rule):
    from tests.conftest import Factory

    place = build_place(Factory())
    db.session.commit()
    url = url_for_place(rule, place)
    before = snapshot()
    users = who_may(EXPECTED[rule.endpoint], place) or [None]
    for user in users:
        client = csrf_app.test_client()
        if user is not None:
            login(client, user)
        response = client.post(url, data={"reason": "核对", "locale": "en", "next": "/"})
        assert response.status_code == 400, (rule.endpoint, user, response.status_code)
    assert snapshot() == before, f"{rule.endpoint} changed data without a CSRF token"


@pytest.mark.parametrize("rule", GETS, ids=lambda r: r.endpoint)
def test_no_get_changes_anything(app, make, rule):
    place = build_place(make)
    db.session.commit()
    url = url_for_place(rule, place)  # builders may create what the URL names: before the snapshot
    db.session.commit()
    before = snapshot()
    for user in who_may(EXPECTED[rule.endpoint], place) or [None]:
        client = app.test_client()
        if user is not None:
            login(client, user)
        response = client.get(url)
        assert response.status_code < 500, (rule.endpoint, response.status_code)
    assert snapshot() == before, f"GET {rule.rule} changed data"
