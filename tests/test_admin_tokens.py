"""The administrator's API token pages: issue (secret shown once), list, revoke, scope."""

from __future__ import annotations

import html
import re

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import ApiToken, AuditEntry, Role
from pointsmart.services import cards, ledger
from tests.conftest import login

SECRET_RE = re.compile(r'id="token-secret" class="secret">(ps_[A-Za-z0-9_-]+)<')


@pytest.fixture
def w(make):
    town = make.town("青山镇")
    village = make.village(town, "青山村")
    group = make.group(village, "一组")
    household = make.household(group, "王建国")
    shop = make.shop(village)
    far_village = make.village(make.town("绿水镇"), "绿水村")
    world = {
        "town": town,
        "village": village,
        "group": group,
        "household": household,
        "shop": shop,
        "admin": make.staff(Role.ADMIN, town),
        "far_admin": make.staff(Role.ADMIN, far_village.town),
        "far_village": far_village,
    }
    make.funded(household, 30)
    db.session.commit()
    return world


@pytest.fixture
def as_user(app):
    def log_in(user):
        client = app.test_client()
        login(client, user)
        client.post("/language", data={"locale": "en", "next": "/"})
        return client

    return log_in


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def count_tokens() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken))


def issue(client, name, role, place):
    return client.post("/admin/tokens/new", data={"name": name, "role": role, "place": place})


def test_a_scanner_token_is_shown_once_works_and_is_listed_without_its_secret(w, as_user):
    admin = as_user(w["admin"])
    page = issue(admin, "超市扫码枪", "clerk", f"shop:{w['shop'].id}")
    assert page.status_code == 200
    secret = SECRET_RE.search(text(page)).group(1)
    assert "no-store" in page.headers["Cache-Control"]
    token = db.session.scalar(sa.select(ApiToken))
    assert token.secret_hash != secret and secret not in token.secret_hash
    # The token works on the API with the role and place it was given.
    code = cards.current_card(w["household"]).code
    api = admin.application.test_client()
    found = api.get(f"/api/v1/cards/{code}", headers={"Authorization": f"Bearer {secret}"})
    assert found.status_code == 200 and found.json["spendable"] == 30
    # The list names it, its role and place, never the secret.
    listing = text(admin.get("/admin/tokens/"))
    assert "超市扫码枪" in listing and token.prefix in listing and secret not in listing
    assert (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "api_token.issue")
        )
        == 1
    )


def test_revoking_stops_the_token_at_once(w, as_user):
    admin = as_user(w["admin"])
    secret = SECRET_RE.search(text(issue(admin, "看板", "admin", f"town:{w['town'].id}"))).group(1)
    token = db.session.scalar(sa.select(ApiToken))
    url = f"/api/v1/villages/{w['village'].id}/totals"
    headers = {"Authorization": f"Bearer {secret}"}
    assert admin.application.test_client().get(url, headers=headers).status_code == 200
    done = admin.post(f"/admin/tokens/{token.id}/revoke", follow_redirects=True)
    assert "no longer works" in text(done)
    assert admin.application.test_client().get(url, headers=headers).status_code == 401
    assert "revoked" in text(admin.get("/admin/tokens/"))


@pytest.mark.parametrize(
    "role, place",
    [
        ("clerk", "village"),  # a clerk serves a shop
        ("committee", "shop"),
        ("admin", "village"),
        ("villager", "village"),  # households get theirs from the household page
        ("", "village"),
        ("clerk", ""),
    ],
)
def test_a_role_that_does_not_fit_the_place_is_refused_and_nothing_is_saved(
    w, as_user, role, place
):
    admin = as_user(w["admin"])
    values = {"village": f"village:{w['village'].id}", "shop": f"shop:{w['shop'].id}", "": ""}
    page = issue(admin, "错的", role, values[place])
    assert page.status_code == 200
    assert "Nothing was saved" in text(page) or "Choose" in text(page)
    assert "token-secret" not in text(page)
    assert count_tokens() == 0


def test_a_nameless_or_overlong_name_is_refused(w, as_user):
    admin = as_user(w["admin"])
    for name in ["", "   ", "长" * 61]:
        page = issue(admin, name, "clerk", f"shop:{w['shop'].id}")
        assert page.status_code == 200 and "token-secret" not in text(page)
    assert count_tokens() == 0


def test_another_towns_administrator_can_neither_issue_here_nor_see_or_revoke(w, as_user):
    admin = as_user(w["admin"])
    issue(admin, "收银台A", "clerk", f"shop:{w['shop'].id}")
    token = db.session.scalar(sa.select(ApiToken))
    far = as_user(w["far_admin"])
    assert "收银台A" not in text(far.get("/admin/tokens/"))
    assert far.post(f"/admin/tokens/{token.id}/revoke").status_code == 404
    refused = issue(far, "偷用", "clerk", f"shop:{w['shop'].id}")
    assert refused.status_code == 200 and "token-secret" not in text(refused)
    stolen = far.post(f"/admin/households/{w['household'].id}/tokens", data={"name": "偷用"})
    assert stolen.status_code == 404
    db.session.expire_all()
    assert count_tokens() == 1 and db.session.get(ApiToken, token.id).revoked_at is None


def test_a_household_token_reads_its_own_balance_only(w, as_user, make):
    admin = as_user(w["admin"])
    page = admin.post(f"/admin/households/{w['household'].id}/tokens", data={"name": "小程序"})
    secret = SECRET_RE.search(text(page)).group(1)
    api = admin.application.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    mine = api.get(f"/api/v1/households/{w['household'].id}", headers=headers)
    assert mine.status_code == 200
    assert mine.json["spendable"] == ledger.balance_of(w["household"]).spendable
    neighbour = make.household(w["group"], "李四")
    db.session.commit()
    assert api.get(f"/api/v1/households/{neighbour.id}", headers=headers).status_code in (403, 404)
