"""The API's common ground: tokens, the error envelope, idempotency keys, the OpenAPI document."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import ApiRequest, AuditEntry, Redemption, Role
from pointsmart.services import api_tokens, cards, catalogue, ledger


@pytest.fixture
def w(make):
    village = make.village()
    household = make.household(make.group(village))
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    admin = make.staff(Role.ADMIN, village.town)
    make.funded(household, 100)
    soap = catalogue.create_item(shop, catalogue.ItemData("肥皂", "日用品", 10), clerk)
    catalogue.receive(soap, clerk, quantity_=5, key="api-in")
    scanner = api_tokens.issue(admin, "超市扫码枪", Role.CLERK, shop)
    db.session.commit()
    return {
        "village": village,
        "household": household,
        "shop": shop,
        "soap": soap,
        "admin": admin,
        "token": scanner.token,
        "auth": {"Authorization": f"Bearer {scanner.secret}"},
        "card": cards.current_card(household),
    }


def checkout(client, w, key="k-1", quantity=1, **extra):
    headers = {**w["auth"], **({"Idempotency-Key": key} if key else {})}
    body = {
        "card": w["card"].code,
        "items": [{"item_id": w["soap"].id, "quantity": quantity}],
        **extra,
    }
    return client.post(f"/api/v1/shops/{w['shop'].id}/checkouts", json=body, headers=headers)


def test_a_call_without_a_token_gets_401_in_the_envelope(client, w):
    response = client.get(f"/api/v1/households/{w['household'].id}")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"
    assert response.json["error"]["message"]


def test_the_message_follows_accept_language(client, w):
    url = f"/api/v1/households/{w['household'].id}"
    english = client.get(url, headers={"Accept-Language": "en-US,en;q=0.9"}).json["error"][
        "message"
    ]
    chinese = client.get(url, headers={"Accept-Language": "zh-CN"}).json["error"]["message"]
    assert "API token" in english and english != chinese


def test_a_scanner_looks_up_a_card_and_redeems_once_per_key(client, w):
    found = client.get(f"/api/v1/cards/{w['card'].code}", headers=w["auth"])
    assert found.status_code == 200 and found.json["spendable"] == 100
    first = checkout(client, w)
    assert first.status_code == 201, first.json
    assert first.json["total_points"] == 10 and first.json["balance_after"] == 90
    again = checkout(client, w)
    assert again.status_code == 201 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Redemption)) == 1
    assert ledger.balance_of(w["household"]).spendable == 90
    # The token acts through its own user: the audit log names it.
    entry = db.session.scalar(
        sa.select(AuditEntry).where(AuditEntry.action == "redemption.checkout")
    )
    assert entry.actor_id == w["token"].user_id


def test_the_same_key_with_another_body_is_422_and_changes_nothing(client, w):
    checkout(client, w)
    other = checkout(client, w, quantity=2)
    assert other.status_code == 422 and other.json["error"]["code"] == "idempotency_conflict"
    assert ledger.balance_of(w["household"]).spendable == 90


def test_a_checkout_without_a_key_is_400(client, w):
    response = checkout(client, w, key=None)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "idempotency_key_missing"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiRequest)) == 0


@pytest.mark.parametrize(
    "quantity, status, code",
    [
        (0, 422, "invalid_input"),
        (-1, 422, "invalid_input"),
        (6, 409, "out_of_stock"),
        (11, 409, "out_of_stock"),
    ],
)
def test_refusals_carry_a_stable_code(client, w, quantity, status, code):
    response = checkout(client, w, key=f"bad-{quantity}", quantity=quantity)
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert ledger.balance_of(w["household"]).spendable == 100


def test_not_enough_points_and_a_revoked_card(client, w, make):
    w["soap"].points = 1000
    db.session.commit()
    poor = checkout(client, w, key="poor")
    assert poor.status_code == 409 and poor.json["error"]["code"] == "insufficient_points"
    cards.reissue(w["household"], w["admin"], "丢失")
    db.session.commit()
    revoked = checkout(client, w, key="revoked")
    assert revoked.status_code == 422 and revoked.json["error"]["code"] == "card_revoked"


def test_a_revoked_token_stops_at_once(client, w):
    api_tokens.revoke(w["token"], w["admin"])
    db.session.commit()
    response = client.get(f"/api/v1/cards/{w['card'].code}", headers=w["auth"])
    assert response.status_code == 401


def test_the_openapi_document_is_served_and_names_every_route(client, app):
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"] == "3.1.0"
    routes = {
        r.rule.replace("<int:", "{").replace("<string:", "{").replace(">", "}")
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/api/v1/")
        and r.endpoint.startswith("api_")
        and "docs" not in r.endpoint
    }
    assert routes == set(spec["paths"])
    checkout_op = spec["paths"]["/api/v1/shops/{shop_id}/checkouts"]["post"]
    key = next(p for p in checkout_op["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is True and key["in"] == "header"
    assert client.get("/api/v1/docs").status_code == 200
