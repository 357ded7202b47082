"""The counter over HTTP: identify a household, build a cart, redeem, print, void, close the day."""

from __future__ import annotations

import html
import io
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from openpyxl import load_workbook

from pointsmart.extensions import db
from pointsmart.models import (
    Identification,
    Item,
    Redemption,
    RedemptionVoid,
    Role,
    StockMovement,
    Transfer,
)
from pointsmart.services import cards, catalogue, ledger, places, redemptions
from tests.conftest import login

KEY = re.compile(r'name="key" type="hidden" value="([0-9a-f]{32})"')


@pytest.fixture
def w(make):
    village = make.village(name="青山村")
    group = make.group(village, "东组")
    household = places.create_household(group, "E-1", "张建国", head_phone="13811112222")
    places.add_member(household, "张小明")
    shop = make.shop(village)
    far_village = make.village(village.town, "柳溪村")
    far_household = places.create_household(make.group(far_village, "西组"), "W-1", "刘德胜")
    clerk = make.staff(Role.CLERK, shop)
    world = SimpleNamespace(
        village=village,
        group=group,
        household=household,
        shop=shop,
        far_household=far_household,
        far_shop=make.shop(far_village),
        clerk=clerk,
        far_clerk=None,
        committee=make.staff(Role.COMMITTEE, village),
        far_committee=make.staff(Role.COMMITTEE, far_village),
        admin=make.staff(Role.ADMIN, village.town),
        oil=catalogue.create_item(shop, catalogue.ItemData("食用油", "粮油", 40), clerk),
        soap=catalogue.create_item(shop, catalogue.ItemData("肥皂", "日用品", 5), clerk),
    )
    world.far_clerk = make.staff(Role.CLERK, world.far_shop)
    catalogue.receive(world.oil, clerk, quantity_=3, key="oil-in")
    catalogue.receive(world.soap, clerk, quantity_=20, key="soap-in")
    make.funded(household, 100)
    make.funded(far_household, 100)
    db.session.commit()
    return world


def counter_url(w) -> str:
    return f"/clerk/shops/{w.shop.id}/counter"


def cart_url(w, household=None) -> str:
    return f"/clerk/shops/{w.shop.id}/households/{(household or w.household).id}/cart"


def checkout_url(w, household=None) -> str:
    return cart_url(w, household).replace("/cart", "/checkout")


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def review(client, w, cart: dict, household=None):
    """Post a cart to the review step; return (response, checkout key)."""
    data = {f"qty-{item.id}": str(q) for item, q in cart.items()}
    response = client.post(cart_url(w, household), data=data)
    match = KEY.search(response.get_data(as_text=True))
    return response, match.group(1) if match else None


def redeem(client, w, cart: dict, key: str | None = None, **extra):
    """Review and confirm a cart like a clerk; return the checkout response."""
    _, found = review(client, w, cart)
    data = {f"qty-{item.id}": str(q) for item, q in cart.items()}
    data.update(key=key or found, total=str(sum(i.points * q for i, q in cart.items())), **extra)
    return client.post(checkout_url(w), data=data)


def state(w) -> tuple:
    """Everything a refused request must leave as it was."""
    db.session.expire_all()
    return (
        ledger.balance_of(w.household),
        w.oil.stock,
        w.soap.stock,
        db.session.scalar(sa.select(sa.func.count()).select_from(Redemption)),
        db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)),
        db.session.scalar(sa.select(sa.func.count()).select_from(StockMovement)),
    )


# --- identifying the household ----------------------------------------------------------------


def test_typed_code_with_dashes_and_lower_case_opens_the_cart(client, w):
    login(client, w.clerk)
    code = cards.current_card(w.household).display_code.lower()
    response = client.post(counter_url(w), data={"code": f" {code} "})
    assert response.status_code == 302
    assert response.headers["Location"] == cart_url(w)
    page = text_of(client.get(cart_url(w)))
    assert "张建国" in page and 'data-balance="100"' in page


def test_scanned_token_is_recorded_as_a_qr_identification(client, w):
    login(client, w.clerk)
    card = cards.current_card(w.household)
    client.post(counter_url(w), data={"code": card.token})
    response = redeem(client, w, {w.soap: 1})
    assert response.status_code == 302
    redemption = db.session.scalar(sa.select(Redemption))
    assert redemption.identified_by is Identification.QR
    assert redemption.card_id == card.id


@pytest.mark.parametrize(
    "code, message",
    [
        ("", "Scan the card"),
        ("hello", "not a points card code"),
        ("ZZZZ-ZZZZ", "No card has this code"),
        ("<script>", "not a points card code"),
    ],
)
def test_bad_codes_give_a_clear_message(client, w, code, message):
    login(client, w.clerk)
    with force_locale("en"):
        client.post("/language", data={"locale": "en"})
    response = client.post(counter_url(w), data={"code": code})
    assert response.status_code == 200
    assert message in text_of(response)


def test_a_reissued_card_stops_working_at_once(client, w):
    old = cards.current_card(w.household)
    cards.reissue(w.household, w.committee, "丢失")
    db.session.commit()
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    for value in (old.token, old.code):
        response = client.post(counter_url(w), data={"code": value})
        assert response.status_code == 200
        assert "has been replaced" in text_of(response)
    new = cards.current_card(w.household)
    assert client.post(counter_url(w), data={"code": new.code}).status_code == 302


def test_another_villages_card_is_refused_at_a_village_shop(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    code = cards.current_card(w.far_household).code
    response = client.post(counter_url(w), data={"code": code})
    assert response.status_code == 200
    assert "belongs to 柳溪村" in text_of(response)
    # Nor can the cart of that household be opened by URL.
    assert client.get(cart_url(w, w.far_household)).status_code == 404


def test_lookup_finds_by_name_and_phone_within_the_shops_villages_only(client, w):
    login(client, w.clerk)
    page = text_of(client.get(f"/clerk/shops/{w.shop.id}/lookup?q=张建国"))
    assert "张建国" in page and "138****2222" in page and "13811112222" not in page
    assert "张建国" in text_of(client.get(f"/clerk/shops/{w.shop.id}/lookup?q=2222"))
    client.post("/language", data={"locale": "en"})
    page = text_of(client.get(f"/clerk/shops/{w.shop.id}/lookup?q=刘德胜"))
    assert "No household of this shop matches" in page and "W-1" not in page


def test_a_lookup_is_confirmed_in_person_and_recorded_as_such(client, w):
    login(client, w.clerk)
    url = f"/clerk/shops/{w.shop.id}/households/{w.household.id}"
    page = text_of(client.get(url))
    assert "张小明" in page
    assert client.post(url).headers["Location"] == cart_url(w)
    assert redeem(client, w, {w.soap: 1}).status_code == 302
    assert db.session.scalar(sa.select(Redemption)).identified_by is Identification.LOOKUP


# --- the cart and checkout ----------------------------------------------------------------------


def test_review_shows_the_total_and_what_remains_without_saving(client, w):
    login(client, w.clerk)
    before = state(w)
    response, key = review(client, w, {w.oil: 2, w.soap: 1})
    assert response.status_code == 200 and key
    page = text_of(response)
    assert 'id="review-total">85<' in page and 'id="review-remaining">15<' in page
    assert state(w) == before


def test_checkout_debits_points_takes_stock_and_shows_the_receipt(client, w):
    login(client, w.clerk)
    response = redeem(client, w, {w.oil: 2, w.soap: 1})
    assert response.status_code == 302
    redemption = db.session.scalar(sa.select(Redemption))
    assert response.headers["Location"] == f"/clerk/redemptions/{redemption.id}"
    assert ledger.balance_of(w.household).spendable == 15
    db.session.refresh(w.oil)
    assert (w.oil.stock, redemption.total_points, redemption.balance_after) == (1, 85, 15)
    receipt = text_of(client.get(f"/clerk/redemptions/{redemption.id}/receipt"))
    assert "食用油" in receipt and "85" in receipt and "张建国" in receipt
    assert "receipt-58mm.css" in receipt
    assert "receipt-a4.css" in text_of(
        client.get(f"/clerk/redemptions/{redemption.id}/receipt?paper=a4")
    )
    assert ledger.check() == ([], []) and catalogue.check_stock() == []


def test_a_double_tap_or_retry_redeems_once(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    _, key = review(client, w, {w.soap: 2})
    data = {f"qty-{w.soap.id}": "2", "key": key, "total": "10"}
    first = client.post(checkout_url(w), data=data)
    second = client.post(checkout_url(w), data=data)
    assert first.headers["Location"] == second.headers["Location"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Redemption)) == 1
    assert ledger.balance_of(w.household).spendable == 90
    page = text_of(client.get(second.headers["Location"]))
    assert "Already redeemed" in page


def test_the_same_key_for_another_cart_changes_nothing(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    _, key = review(client, w, {w.soap: 1})
    client.post(checkout_url(w), data={f"qty-{w.soap.id}": "1", "key": key, "total": "5"})
    before = state(w)
    response = client.post(
        checkout_url(w), data={f"qty-{w.soap.id}": "3", "key": key, "total": "15"}
    )
    assert response.status_code == 422
    assert "already used for another cart" in text_of(response)
    assert state(w) == before


@pytest.mark.parametrize(
    "quantities, message",
    [
        ({}, "The cart is empty"),
        ({"soap": "-1"}, "between 1 and 999"),
        ({"soap": "abc"}, "must be a whole number"),
        ({"soap": "1000"}, "between 1 and 999"),
        ({"oil": "3"}, "Not enough points"),  # 120 > 100
        ({"oil": "4"}, "Not enough “食用油” in stock"),
    ],
)
def test_bad_carts_are_refused_with_a_message_and_change_nothing(client, w, quantities, message):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    before = state(w)
    data = {f"qty-{getattr(w, name).id}": q for name, q in quantities.items()}
    response = client.post(cart_url(w), data=data)
    assert response.status_code == 422
    assert message in text_of(response)
    # The confirmation is refused as well, should the review be skipped.
    response = client.post(checkout_url(w), data={**data, "key": "k" * 32})
    assert response.status_code in (409, 422)
    assert message in text_of(response)
    assert state(w) == before


def test_an_inactive_item_or_another_shops_item_cannot_be_redeemed(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    foreign = catalogue.create_item(
        w.far_shop, catalogue.ItemData("外村货", "其他", 1), w.far_clerk
    )
    w.soap.is_active = False
    db.session.commit()
    before = state(w)
    for item, message in ((w.soap, "no longer on sale"), (foreign, "no such item")):
        response = client.post(checkout_url(w), data={f"qty-{item.id}": "1", "key": "x" * 32})
        assert message in text_of(response)
    assert state(w) == before


def test_a_price_change_during_the_review_is_caught(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    _, key = review(client, w, {w.soap: 2})
    w.soap.points = 6
    db.session.commit()
    before = state(w)
    response = client.post(
        checkout_url(w), data={f"qty-{w.soap.id}": "2", "key": key, "total": "10"}
    )
    assert "Prices changed" in text_of(response)
    assert state(w) == before


def test_outside_the_exchange_window_nothing_is_redeemed(client, w):
    from datetime import time

    from pointsmart.timeutil import to_local, utcnow

    today = to_local(utcnow()).day
    other_day = 1 if today != 1 else 2
    catalogue.set_exchange_window(w.shop, w.clerk, days=str(other_day), opens_at=None)
    db.session.commit()
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    counter = text_of(client.get(counter_url(w)))
    assert f"on day {other_day} of each month" in counter
    before = state(w)
    response = client.post(checkout_url(w), data={f"qty-{w.soap.id}": "1", "key": "y" * 32})
    assert response.status_code == 409
    assert "exchanges points only on day" in text_of(response)
    assert state(w) == before
    catalogue.set_exchange_window(
        w.shop, w.clerk, days=None, opens_at=time(0), closes_at=time(23, 59)
    )


def test_a_clerk_of_another_shop_cannot_open_this_counter_or_redemptions(client, w):
    login(client, w.clerk)
    redeem(client, w, {w.soap: 1})
    redemption = db.session.scalar(sa.select(Redemption))
    other = client.application.test_client()
    login(other, w.far_clerk)
    assert other.get(counter_url(w)).status_code == 404
    assert other.get(f"/clerk/redemptions/{redemption.id}").status_code == 404
    assert other.post(f"/clerk/redemptions/{redemption.id}/void").status_code == 404


# --- voids ----------------------------------------------------------------------------------


def void(client, redemption_id: int, **data):
    page = client.get(f"/clerk/redemptions/{redemption_id}").get_data(as_text=True)
    key = KEY.search(page).group(1)
    return client.post(f"/clerk/redemptions/{redemption_id}/void", data={"key": key, **data})


def test_voiding_one_line_gives_its_points_and_goods_back(client, w):
    login(client, w.clerk)
    redeem(client, w, {w.oil: 2, w.soap: 1})
    redemption = db.session.scalar(sa.select(Redemption))
    oil_line = next(line for line in redemption.lines if line.item_id == w.oil.id)
    response = void(client, redemption.id, reason="拿错了", **{f"void-{oil_line.id}": "1"})
    assert response.status_code == 302
    assert ledger.balance_of(w.household).spendable == 55
    db.session.refresh(w.oil)
    assert w.oil.stock == 2
    page = text_of(client.get(f"/clerk/redemptions/{redemption.id}"))
    assert "拿错了" in page and "+40" in page
    # The villager's history shows the refund with its reason.
    refund = db.session.scalar(sa.select(Transfer).where(Transfer.refunds_id.is_not(None)))
    assert refund.signed_points == 40 and refund.reason == "拿错了"
    assert ledger.check() == ([], []) and catalogue.check_stock() == []


def test_void_everything_then_nothing_is_left_to_void(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    redeem(client, w, {w.oil: 1, w.soap: 2})
    redemption = db.session.scalar(sa.select(Redemption))
    assert void(client, redemption.id, reason="顾客反悔", all="1").status_code == 302
    assert ledger.balance_of(w.household).spendable == 100
    response = void(client, redemption.id, reason="再来一次", all="1")
    assert "already been voided" in text_of(client.get(response.headers["Location"]))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RedemptionVoid)) == 1


def test_a_void_without_a_reason_or_with_too_many_units_changes_nothing(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    redeem(client, w, {w.soap: 2})
    redemption = db.session.scalar(sa.select(Redemption))
    line = redemption.lines[0]
    before = state(w)
    for data, message in (
        ({"reason": "", f"void-{line.id}": "1"}, "Please give a reason"),
        ({"reason": "多退", f"void-{line.id}": "3"}, "between 1 and 2"),
        ({"reason": "多退", f"void-{line.id}": "-1"}, "between 1 and 2"),
        ({"reason": "没选", f"void-{line.id}": "0"}, "Choose at least one item"),
    ):
        response = void(client, redemption.id, **data)
        assert message in text_of(client.get(response.headers["Location"]))
    assert state(w) == before


def test_the_next_day_only_a_committee_member_can_void(client, w):
    login(client, w.clerk)
    redeem(client, w, {w.soap: 2})
    redemption = db.session.scalar(sa.select(Redemption))
    redemption.created_at -= timedelta(days=1)
    redemption.transfer.posted_at -= timedelta(days=1)
    db.session.commit()
    client.post("/language", data={"locale": "en"})
    page = text_of(client.get(f"/clerk/redemptions/{redemption.id}"))
    assert "only on the day it was made" in page
    response = void(client, redemption.id, reason="晚了", all="1")
    assert "only on the day it was made" in text_of(client.get(response.headers["Location"]))
    assert ledger.balance_of(w.household).spendable == 90

    committee = client.application.test_client()
    login(committee, w.committee)
    assert void(committee, redemption.id, reason="村委核实退货", all="1").status_code == 302
    assert ledger.balance_of(w.household).spendable == 100
    far = client.application.test_client()
    login(far, w.far_committee)
    assert far.get(f"/clerk/redemptions/{redemption.id}").status_code == 404


# --- catalogue and stock ----------------------------------------------------------------------


def test_a_clerk_adds_an_item_and_receives_goods(client, w):
    login(client, w.clerk)
    response = client.post(
        f"/clerk/shops/{w.shop.id}/items/new",
        data={
            "name": "酱油",
            "category": "粮油",
            "points": "８",
            "low_stock_at": "2",
            "is_active": "y",
        },
    )
    item = db.session.scalar(sa.select(Item).where(Item.name == "酱油"))
    assert response.headers["Location"] == f"/clerk/items/{item.id}"
    assert item.points == 8  # a full-width digit typed on a Chinese keyboard
    page = text_of(client.get(f"/clerk/items/{item.id}"))
    key = KEY.search(page).group(1)
    client.post(
        f"/clerk/items/{item.id}/intake",
        data={
            "key": key,
            "quantity": "12",
            "cost": "35.50",
            "funding": "donated",
            "donor": "县妇联",
        },
    )
    db.session.refresh(item)
    movement = db.session.scalar(sa.select(StockMovement).where(StockMovement.item_id == item.id))
    assert (item.stock, movement.cost_fen, movement.donor) == (12, 3550, "县妇联")
    assert "县妇联" in text_of(client.get(f"/clerk/items/{item.id}"))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "酱油", "category": "粮油", "points": "0"}, "between 1 and 100000"),
        ({"name": "酱油", "category": "粮油", "points": "-3"}, "between 1 and 100000"),
        ({"name": "酱油", "category": "粮油", "points": "1.5"}, "whole number"),
        ({"name": "肥皂", "category": "日用品", "points": "5"}, "already has an item"),
    ],
)
def test_bad_items_are_refused(client, w, data, message):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    count = db.session.scalar(sa.select(sa.func.count()).select_from(Item))
    response = client.post(
        f"/clerk/shops/{w.shop.id}/items/new", data={"low_stock_at": "5", "is_active": "y", **data}
    )
    assert response.status_code == 200
    assert message in text_of(response)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Item)) == count


def test_a_fake_photo_is_refused_and_the_item_not_saved(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    response = client.post(
        f"/clerk/shops/{w.shop.id}/items/new",
        data={
            "name": "假图",
            "category": "其他",
            "points": "3",
            "low_stock_at": "1",
            "photo": (io.BytesIO(b"<html>not a photo</html>"), "x.jpg"),
        },
        content_type="multipart/form-data",
    )
    assert "not a photo" in text_of(response)
    assert db.session.scalar(sa.select(Item).where(Item.name == "假图")) is None


def test_write_off_needs_a_reason_and_cannot_go_below_zero(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    url = f"/clerk/items/{w.oil.id}"
    for data, message in (
        ({"quantity": "1", "reason": ""}, "Please give a reason"),
        ({"quantity": "4", "reason": "过期"}, "3 left, 4 wanted"),
        ({"quantity": "0", "reason": "过期"}, "between 1 and 10000"),
    ):
        key = KEY.findall(client.get(url).get_data(as_text=True))[1]
        response = client.post(url + "/write-off", data={"key": key, **data})
        assert message in text_of(client.get(response.headers["Location"]))
    db.session.refresh(w.oil)
    assert w.oil.stock == 3
    key = KEY.findall(client.get(url).get_data(as_text=True))[1]
    client.post(url + "/write-off", data={"key": key, "quantity": "1", "reason": "漏油"})
    db.session.refresh(w.oil)
    assert w.oil.stock == 2 and catalogue.check_stock() == []


def test_the_counter_warns_of_low_stock(client, w):
    w.oil.low_stock_at = 3
    db.session.commit()
    login(client, w.clerk)
    page = text_of(client.get(counter_url(w)))
    assert 'id="low-stock"' in page and "食用油" in page


def test_the_exchange_window_form_rejects_bad_days(client, w):
    login(client, w.clerk)
    client.post("/language", data={"locale": "en"})
    url = f"/clerk/shops/{w.shop.id}/settings"
    response = client.post(url, data={"days": "32"})
    assert "from 1 to 31" in text_of(response)
    assert w.shop.exchange_days is None
    response = client.post(url, data={"days": "10，25", "weekdays": ["6", "7"]})
    assert response.status_code == 302
    db.session.refresh(w.shop)
    assert (w.shop.exchange_days, w.shop.exchange_weekdays) == ("10,25", "67")


def test_the_town_admin_runs_the_catalogue_but_not_the_counter(client, w):
    login(client, w.admin)
    home = text_of(client.get("/admin/"))
    assert f'href="/clerk/shops/{w.shop.id}/items"' in home and 'href="/cadre/cards"' in home
    page = text_of(client.get(f"/clerk/shops/{w.shop.id}/items"))
    assert counter_url(w) not in page  # the shop's menu offers no counter to an administrator
    assert client.get(counter_url(w)).status_code == 403


# --- the day ---------------------------------------------------------------------------------


def test_the_day_report_matches_the_excel_and_csv_and_closing_is_kept(client, w):
    login(client, w.clerk)
    redeem(client, w, {w.oil: 1, w.soap: 2})
    redemption = db.session.scalar(sa.select(Redemption))
    void(client, redemption.id, reason="退一块", **{f"void-{redemption.lines[1].id}": "1"})
    url = f"/clerk/shops/{w.shop.id}/day"
    page = text_of(client.get(url))
    assert 'id="day-redemptions">1<' in page
    assert 'id="day-points">50<' in page and 'id="day-net">45<' in page

    book = load_workbook(io.BytesIO(client.get(url + ".xlsx").data))
    summary = list(book.worksheets[0].iter_rows(values_only=True))
    assert summary[1][2:] == (1, 1, 50, 1, 5, 45)
    goods = {row[0]: row[1:] for row in book.worksheets[1].iter_rows(min_row=2, values_only=True)}
    assert goods["食用油"] == (1, 0, 3, 0, 40, 2)
    assert goods["肥皂"] == (2, 1, 20, 0, 5, 19)
    csv_text = client.get(url + ".csv").get_data(as_text=True)
    assert csv_text.startswith("\ufeff") and "食用油" in csv_text

    assert client.post(f"/clerk/shops/{w.shop.id}/day/close").status_code == 302
    assert client.post(f"/clerk/shops/{w.shop.id}/day/close").status_code == 302
    closing = redemptions.closing_of(w.shop, redemption.created_at.date())
    closing = closing or db.session.scalar(sa.select(redemptions.DayClosing))
    assert closing.figures["net_points"] == 45
    assert 'id="changed-after-closing"' not in text_of(client.get(url))
    redeem(client, w, {w.soap: 1})
    assert 'id="changed-after-closing"' in text_of(client.get(url))


def test_a_formula_in_a_name_stays_text_in_the_export(client, w):
    w.household.name = "=HYPERLINK(1)"
    db.session.commit()
    login(client, w.clerk)
    redeem(client, w, {w.soap: 1})
    book = load_workbook(io.BytesIO(client.get(f"/clerk/shops/{w.shop.id}/day.xlsx").data))
    cell = book.worksheets[2]["C2"]
    assert cell.value == "'=HYPERLINK(1)" and cell.data_type == "s"


@pytest.mark.parametrize("day", ["2099-01-01", "yesterday", "1999-12-31"])
def test_a_bad_or_future_day_gives_a_message(client, w, day):
    login(client, w.clerk)
    response = client.get(f"/clerk/shops/{w.shop.id}/day?date={day}", follow_redirects=True)
    assert response.status_code == 200
    client.post("/language", data={"locale": "en"})
    response = client.get(f"/clerk/shops/{w.shop.id}/day?date={day}", follow_redirects=True)
    assert "already begun" in text_of(response)


def test_the_villager_sees_the_redemption_and_the_refund_with_reasons(client, w, make):
    villager = make.villager(w.household)
    db.session.commit()
    login(client, w.clerk)
    redeem(client, w, {w.oil: 2})
    redemption = db.session.scalar(sa.select(Redemption))
    void(client, redemption.id, reason="多拿了一桶", **{f"void-{redemption.lines[0].id}": "1"})
    phone = client.application.test_client()
    login(phone, villager)
    phone.post("/language", data={"locale": "en"})
    page = text_of(phone.get("/me/"))
    assert "食用油×2" in page and w.shop.name in page
    assert "Refund" in page and "多拿了一桶" in page and "Goods taken back from: 食用油×2" in page
    assert "+40" in page and "-80" in page


def test_a_committee_member_reaches_an_old_receipt_from_the_household_page(client, w):
    login(client, w.clerk)
    redeem(client, w, {w.soap: 1})
    redemption = db.session.scalar(sa.select(Redemption))
    committee = client.application.test_client()
    login(committee, w.committee)
    page = text_of(committee.get(f"/cadre/households/{w.household.id}"))
    assert f'href="/clerk/redemptions/{redemption.id}"' in page
    assert "张小明" in text_of(client.get(cart_url(w)))  # the cart names the members
