"""The catalogue service: items, intake, write-off, stock reconciliation and the exchange window."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from datetime import UTC, datetime, time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import Funding, Item, MovementKind, Role, Shop, StockMovement
from pointsmart.services import catalogue, ledger, redemptions
from pointsmart.services.errors import (
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    OutOfStock,
    OutsideExchangeWindow,
)
from pointsmart.services.ledger import MAX_POINTS
from pointsmart.timeutil import LOCAL_TZ


@pytest.fixture(autouse=True)
def stock_stays_clean(app):
    """Whatever a test did or was refused, stock equals the sum of movements, books balance."""
    yield
    db.session.rollback()
    assert catalogue.check_stock() == []
    assert ledger.check() == ([], [])
    assert redemptions.check_redemptions() == []


@pytest.fixture
def world(make):
    """A village shop with its clerk, another shop of the town, admins; committed."""
    town = make.town()
    village = make.village(town)
    shop = make.shop(village)
    other_shop = make.shop(make.village(town))
    w = SimpleNamespace(
        town=town,
        village=village,
        shop=shop,
        other_shop=other_shop,
        household=make.household(make.group(village)),
        clerk=make.staff(Role.CLERK, shop),
        other_clerk=make.staff(Role.CLERK, other_shop),
        admin=make.staff(Role.ADMIN, town),
        far_admin=make.staff(Role.ADMIN, make.town()),
        committee=make.staff(Role.COMMITTEE, village),
        cadre=make.staff(Role.CADRE, village),
    )
    db.session.commit()
    return w


_keys = itertools.count(1)


def key() -> str:
    return f"stock-{next(_keys)}"


def english(error) -> str:
    with force_locale("en"):
        return str(error.message)


def new_item(w, name="大米", points=10, *, shop=None, actor=None, **extra) -> Item:
    data = catalogue.ItemData(
        name=name, category=extra.pop("category", "粮油"), points=points, **extra
    )
    return catalogue.create_item(shop or w.shop, data, actor or w.clerk)


def receive(w, item, units=10, **extra) -> StockMovement:
    return catalogue.receive(
        item,
        extra.pop("actor", w.clerk),
        quantity_=units,
        key=extra.pop("key", None) or key(),
        **extra,
    )


def stocked(w, name="大米", points=10, units=10) -> Item:
    item = new_item(w, name, points)
    receive(w, item, units)
    db.session.commit()
    return item


def snapshot():
    """What a refused call must leave as it was: items, their stock, movements, shop settings."""
    return (
        db.session.execute(
            sa.select(Item.id, Item.name, Item.points, Item.stock, Item.is_active).order_by(Item.id)
        ).all(),
        db.session.scalar(sa.select(sa.func.count()).select_from(StockMovement)),
        db.session.execute(
            sa.select(
                Shop.id, Shop.exchange_days, Shop.exchange_weekdays, Shop.opens_at, Shop.closes_at
            ).order_by(Shop.id)
        ).all(),
    )


@contextmanager
def refused(error, *, late: bool = False):
    """Expect ``error``; after the caller rolls back (as every view does), nothing changed.

    A refusal of the input itself comes before any write (nothing even flushed); a ``late``
    one (stock ran out in the guarded UPDATE) may leave writes the rollback discards.
    """
    db.session.commit()
    before = snapshot()
    with pytest.raises(error) as info:
        yield info
    if not late:
        assert snapshot() == before
    db.session.rollback()
    assert snapshot() == before


# --- items ------------------------------------------------------------------------------------


def test_create_item_keeps_what_the_form_said(world):
    item = new_item(world, "  金龙鱼\u3000食用油  5L ", "２５", category=" 粮油 ", low_stock_at="3")
    db.session.commit()

    assert item.shop_id == world.shop.id
    assert item.name == "金龙鱼 食用油 5L"  # trimmed, full-width space and runs collapsed
    assert item.category == "粮油"
    assert item.points == 25  # full-width digits typed by a Chinese input method
    assert item.low_stock_at == 3
    assert item.stock == 0
    assert item.is_active is True
    assert catalogue.movements(item) == []


def test_the_admin_of_the_town_may_add_items(world):
    item = new_item(world, "洗衣粉", 8, actor=world.admin)
    db.session.commit()
    assert item.id is not None


def test_a_name_is_unique_within_a_shop_only(world):
    new_item(world, "大米")
    db.session.commit()
    with refused(InvalidInput) as info:
        new_item(world, " 大米 ", 12)
    assert english(info.value) == "This shop already has an item called “大米”."

    other = new_item(world, "大米", shop=world.other_shop, actor=world.other_clerk)
    db.session.commit()
    assert other.shop_id == world.other_shop.id


@pytest.mark.parametrize(
    "points",
    [0, -1, MAX_POINTS + 1, 10**20, "abc", "1.5", 1.5, "", None, True, "１２ａ", "1e3"],
)
def test_bad_prices_are_refused_with_a_message(world, points):
    with refused(InvalidInput) as info:
        new_item(world, "大米", points)
    message = english(info.value)
    assert message.startswith("The price in points must be"), message


@pytest.mark.parametrize(
    ("typed", "points"), [("１２", 12), (" 7 ", 7), ("+3", 3), (MAX_POINTS, MAX_POINTS)]
)
def test_prices_typed_in_any_width_are_accepted(world, typed, points):
    assert new_item(world, "大米", typed).points == points


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", ""), ("name", "   "), ("name", "米" * 61), ("name", "大\x00米"), ("category", "")],
)
def test_bad_names_and_categories_are_refused(world, field, value):
    data = {"name": "大米", "category": "粮油", "points": 10, field: value}
    with refused(InvalidInput):
        catalogue.create_item(world.shop, catalogue.ItemData(**data), world.clerk)


@pytest.mark.parametrize("who", ["other_clerk", "far_admin", "committee", "cadre"])
def test_only_the_shops_clerks_and_town_admin_manage_its_catalogue(world, who):
    actor = getattr(world, who)
    item = stocked(world)
    data = catalogue.ItemData(name="新大米", category="粮油", points=1)
    with refused(Forbidden):
        catalogue.create_item(world.shop, data, actor)
    with refused(Forbidden):
        catalogue.update_item(item, data, actor)
    with refused(Forbidden):
        catalogue.receive(item, actor, quantity_=1, key=key())
    with refused(Forbidden):
        catalogue.write_off(item, actor, quantity_=1, reason="发霉", key=key())
    with refused(Forbidden):
        catalogue.set_exchange_window(world.shop, actor, days="10")
    assert not catalogue.can_manage(actor, world.shop)
    assert catalogue.can_manage(world.clerk, world.shop)
    assert catalogue.can_manage(world.admin, world.shop)


def test_update_item_changes_the_catalogue_but_not_past_redemptions(world, make):
    item = stocked(world, "大米", 10)
    make.funded(world.household, 100)
    redemption, _ = redemptions.checkout(
        shop=world.shop, household=world.household, cart={item.id: 2}, clerk=world.clerk, key=key()
    )
    db.session.commit()

    catalogue.update_item(
        item,
        catalogue.ItemData(
            name="东北大米", category="主食", points="15", low_stock_at=2, is_active=False
        ),
        world.clerk,
    )
    db.session.commit()
    db.session.expire_all()

    assert (item.name, item.category, item.points, item.low_stock_at, item.is_active) == (
        "东北大米",
        "主食",
        15,
        2,
        False,
    )
    [line] = redemption.lines
    assert (line.item_name, line.unit_points, line.quantity, line.points) == ("大米", 10, 2, 20)
    assert redemption.total_points == 20
    assert redemption.transfer.amount == 20
    assert redemption.transfer.reason == "大米×2"


def test_update_item_refuses_another_items_name_but_keeps_its_own(world):
    rice = new_item(world, "大米")
    new_item(world, "面粉")
    db.session.commit()
    with refused(InvalidInput):
        catalogue.update_item(rice, catalogue.ItemData("面粉", "粮油", 10), world.clerk)
    catalogue.update_item(rice, catalogue.ItemData("大米", "粮油", 11), world.clerk)
    db.session.commit()
    assert rice.points == 11


def test_get_item_only_finds_the_shops_own_items(world):
    item = new_item(world)
    db.session.commit()
    assert catalogue.get_item(world.shop, item.id) is item
    for shop, item_id in [(world.other_shop, item.id), (world.shop, 999_999), (world.shop, "1")]:
        with pytest.raises(InvalidInput) as info:
            catalogue.get_item(shop, item_id)
        assert english(info.value) == "This shop has no such item."


# --- intake -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cost", "fen"),
    [
        ("35.5", 3550),
        ("35.50", 3550),
        ("0.01", 1),
        ("0", 0),
        ("１２.３", 1230),
        ("1,000", 100_000),
        (" 88 ", 8800),
        ("1000000", 100_000_000),
        ("", None),
        (None, None),
    ],
)
def test_intake_records_the_cost_in_fen(world, cost, fen):
    item = new_item(world)
    movement = receive(world, item, 12, cost_yuan=cost)
    db.session.commit()

    assert movement.kind is MovementKind.INTAKE
    assert movement.quantity == 12
    assert movement.cost_fen == fen
    assert movement.funding is Funding.PURCHASED
    assert movement.user_id == world.clerk.id
    assert item.stock == 12


@pytest.mark.parametrize(
    "cost", ["-1", "abc", "1.234", "NaN", "Infinity", "1000000.01", "1e7", "¥35", "35元"]
)
def test_intake_refuses_bad_costs(world, cost):
    item = stocked(world)
    with refused(InvalidInput) as info:
        receive(world, item, 1, cost_yuan=cost)
    assert english(info.value) == "The cost must be an amount in yuan, like 35.50."


@pytest.mark.parametrize("units", [0, -1, "abc", "1.5", catalogue.MAX_QUANTITY + 1, None])
def test_intake_refuses_bad_quantities(world, units):
    item = stocked(world)
    with refused(InvalidInput) as info:
        receive(world, item, units)
    assert english(info.value).startswith("The quantity must be")


def test_intake_records_funding_and_donor(world):
    item = new_item(world)
    donated = receive(world, item, 20, funding="donated", donor=" 县妇联 ")
    budget = receive(world, item, 5, funding=Funding.VILLAGE_BUDGET, donor="2026 年村集体经费")
    db.session.commit()

    assert (donated.funding, donated.donor, donated.cost_fen) == (Funding.DONATED, "县妇联", None)
    assert (budget.funding, budget.donor) == (Funding.VILLAGE_BUDGET, "2026 年村集体经费")
    assert item.stock == 25


@pytest.mark.parametrize("extra", [{"funding": "stolen"}, {"donor": "县" * 61}])
def test_intake_refuses_bad_funding_or_donor(world, extra):
    item = stocked(world)
    with refused(InvalidInput):
        receive(world, item, 1, **extra)


def test_intake_needs_a_key(world):
    item = stocked(world)
    for bad in ["", "   ", "k" * 121]:
        with refused(InvalidInput):
            catalogue.receive(item, world.clerk, quantity_=1, key=bad)


def test_the_same_intake_sent_twice_adds_once(world):
    item = new_item(world)
    first = receive(
        world, item, 10, key="intake-1", cost_yuan="50", funding="donated", donor="县妇联"
    )
    db.session.commit()
    again = receive(
        world, item, 10, key="intake-1", cost_yuan="50", funding="donated", donor="县妇联"
    )
    db.session.commit()

    assert again.id == first.id
    assert item.stock == 10
    assert len(catalogue.movements(item)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"units": 11},
        {"cost_yuan": "60"},
        {"funding": "purchased"},
        {"donor": "县民政局"},
        {"item": "other"},
    ],
)
def test_an_intake_key_reused_with_other_content_is_a_conflict(world, change):
    item = new_item(world)
    other = new_item(world, "面粉")
    content = {"units": 10, "cost_yuan": "50", "funding": "donated", "donor": "县妇联"}
    receive(world, item, content.pop("units"), key="intake-1", **content)
    db.session.commit()

    content = {"units": 10, "cost_yuan": "50", "funding": "donated", "donor": "县妇联", **change}
    target = other if content.pop("item", None) else item
    with refused(IdempotencyConflict):
        receive(world, target, content.pop("units"), key="intake-1", **content)
    assert item.stock == 10


def test_a_write_off_cannot_reuse_an_intake_key(world):
    item = new_item(world)
    receive(world, item, 10, key="form-1")
    db.session.commit()
    with refused(IdempotencyConflict):
        catalogue.write_off(item, world.clerk, quantity_=10, reason="发霉", key="form-1")


# --- write-off --------------------------------------------------------------------------------


def test_write_off_takes_units_off_with_a_reason(world):
    item = stocked(world, units=10)
    movement = catalogue.write_off(item, world.clerk, quantity_="3", reason=" 受潮发霉 ", key=key())
    db.session.commit()

    assert (movement.kind, movement.quantity, movement.reason) == (
        MovementKind.WRITE_OFF,
        -3,
        "受潮发霉",
    )
    assert item.stock == 7


@pytest.mark.parametrize("reason", ["", "   ", None, "因" * 201])
def test_write_off_needs_a_reason(world, reason):
    item = stocked(world)
    with refused(InvalidInput):
        catalogue.write_off(item, world.clerk, quantity_=1, reason=reason, key=key())


def test_write_off_cannot_take_stock_below_zero(world):
    item = stocked(world, "食用油", units=4)
    with refused(OutOfStock, late=True) as info:
        catalogue.write_off(item, world.clerk, quantity_=5, reason="过期", key=key())
    assert english(info.value) == "Not enough “食用油” in stock: 4 left, 5 wanted."

    catalogue.write_off(item, world.clerk, quantity_=4, reason="过期", key=key())
    db.session.commit()
    assert item.stock == 0
    with refused(OutOfStock, late=True) as info:
        catalogue.write_off(item, world.clerk, quantity_=1, reason="过期", key=key())
    assert english(info.value) == "Not enough “食用油” in stock: 0 left, 1 wanted."


def test_the_same_write_off_sent_twice_takes_once(world):
    item = stocked(world, units=5)
    first = catalogue.write_off(item, world.clerk, quantity_=2, reason="破损", key="w-1")
    db.session.commit()
    again = catalogue.write_off(item, world.clerk, quantity_=2, reason="破损", key="w-1")
    db.session.commit()
    assert again.id == first.id
    assert item.stock == 3
    with refused(IdempotencyConflict):
        catalogue.write_off(item, world.clerk, quantity_=2, reason="丢失", key="w-1")


def test_stock_equals_the_sum_of_movements_after_everything(world, make):
    rice = stocked(world, "大米", 10, units=10)
    oil = stocked(world, "食用油", 30, units=3)
    empty = new_item(world, "茶叶", 50)
    make.funded(world.household, 200)
    receive(world, rice, 5, cost_yuan="20")
    catalogue.write_off(rice, world.clerk, quantity_=2, reason="鼠咬", key=key())
    redemption, _ = redemptions.checkout(
        shop=world.shop,
        household=world.household,
        cart={rice.id: 4, oil.id: 3},
        clerk=world.clerk,
        key=key(),
    )
    redemptions.void(
        redemption, world.clerk, reason="拿错了", key=key(), quantities={redemption.lines[0].id: 1}
    )
    db.session.commit()

    assert (rice.stock, oil.stock, empty.stock) == (10, 0, 0)
    for item in (rice, oil, empty):
        assert item.stock == sum(m.quantity for m in catalogue.movements(item))
    assert catalogue.check_stock() == []

    # A stock changed behind the movements' back is named.
    db.session.execute(sa.update(Item).where(Item.id == oil.id).values(stock=1))
    assert [(item.id, total) for item, total in catalogue.check_stock()] == [(oil.id, 0)]
    db.session.rollback()


# --- exchange window --------------------------------------------------------------------------


def at(text: str) -> datetime:
    """Return a moment given in Beijing time, as the UTC moment it is."""
    return datetime.fromisoformat(text).replace(tzinfo=LOCAL_TZ).astimezone(UTC)


def window(w, **values) -> Shop:
    shop = catalogue.set_exchange_window(w.shop, w.clerk, **values)
    db.session.commit()
    return shop


def test_a_shop_without_a_window_is_always_open(world):
    assert catalogue.is_open(world.shop)
    assert catalogue.is_open(world.shop, at("2026-02-28 03:00"))
    catalogue.require_open(world.shop)
    with force_locale("en"):
        assert catalogue.describe_window(world.shop) == "every day, all day"


def test_days_of_the_month_and_hours_in_beijing_time(world):
    window(world, days="25，10 ", opens_at=time(8, 0), closes_at=time(17, 30))
    assert world.shop.exchange_days == "10,25"

    assert catalogue.is_open(world.shop, at("2026-03-10 08:00"))
    assert catalogue.is_open(world.shop, at("2026-03-25 17:29"))
    assert not catalogue.is_open(world.shop, at("2026-03-10 07:59"))
    assert not catalogue.is_open(world.shop, at("2026-03-10 17:30"))  # closing time is closed
    assert not catalogue.is_open(world.shop, at("2026-03-11 10:00"))
    # 10:00 UTC on the 9th is 18:00 in Beijing; 02:00 UTC on the 10th is 10:00 there.
    assert not catalogue.is_open(world.shop, datetime(2026, 3, 9, 10, 0, tzinfo=UTC))
    assert catalogue.is_open(world.shop, datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    # 20:00 UTC on the 9th is already 04:00 on the 10th in Beijing, before opening.
    assert not catalogue.is_open(world.shop, datetime(2026, 3, 9, 20, 0, tzinfo=UTC))
    # 18:00 UTC on the 10th is the 11th in Beijing.
    assert not catalogue.is_open(world.shop, datetime(2026, 3, 10, 18, 0, tzinfo=UTC))


def test_weekdays(world):
    window(world, days="", weekdays=["6", 7])
    assert world.shop.exchange_days is None
    assert world.shop.exchange_weekdays == "67"

    assert catalogue.is_open(world.shop, at("2026-03-14 09:00"))  # Saturday
    assert catalogue.is_open(world.shop, at("2026-03-15 23:59"))  # Sunday
    assert not catalogue.is_open(world.shop, at("2026-03-09 12:00"))  # Monday
    # Friday 20:00 UTC is Saturday 04:00 in Beijing.
    assert catalogue.is_open(world.shop, datetime(2026, 3, 13, 20, 0, tzinfo=UTC))

    window(world, days=None, weekdays=[str(d) for d in range(1, 8)])
    assert world.shop.exchange_weekdays is None  # every weekday is no restriction


def test_days_and_weekdays_must_both_hold(world):
    window(world, days="10", weekdays=["2"])  # the 10th of March 2026 is a Tuesday
    assert catalogue.is_open(world.shop, at("2026-03-10 12:00"))
    assert not catalogue.is_open(world.shop, at("2026-04-10 12:00"))  # a Friday
    assert not catalogue.is_open(world.shop, at("2026-03-17 12:00"))  # a Tuesday, the 17th


def test_require_open_names_the_window(world):
    window(world, days="10,25", weekdays=["6"], opens_at=time(8, 0), closes_at=time(17, 0))
    with pytest.raises(OutsideExchangeWindow) as info:
        catalogue.require_open(world.shop, at("2026-03-11 09:00"))
    assert english(info.value) == (
        f"{world.shop.name} exchanges points only on day 10, 25 of each month; Saturday; "
        "08:00–17:00. Nothing was redeemed."
    )
    assert "10, 25" in str(info.value.message)  # and in Chinese too
    catalogue.require_open(world.shop, at("2026-10-10 08:00"))  # a Saturday the 10th


def test_a_window_can_be_cleared(world):
    window(world, days="10", weekdays=["1"], opens_at=time(9, 0), closes_at=time(11, 0))
    window(world, days=" ", weekdays=[], opens_at=None, closes_at=None)
    shop = world.shop
    assert (shop.exchange_days, shop.exchange_weekdays, shop.opens_at, shop.closes_at) == (
        None,
        None,
        None,
        None,
    )
    assert catalogue.is_open(shop, at("2026-03-11 03:00"))


@pytest.mark.parametrize(
    "values",
    [
        {"days": "32"},
        {"days": "0"},
        {"days": "abc"},
        {"days": "10,x"},
        {"days": "-1"},
        {"days": "1.5"},
        {"days": "10", "weekdays": ["8"]},
        {"days": None, "weekdays": ["0"]},
        {"days": None, "weekdays": ["Sat"]},
        {"days": None, "opens_at": time(9, 0)},
        {"days": None, "closes_at": time(9, 0)},
        {"days": None, "opens_at": time(17, 0), "closes_at": time(8, 0)},
        {"days": None, "opens_at": time(9, 0), "closes_at": time(9, 0)},
    ],
)
def test_bad_windows_are_refused_and_the_old_one_stays(world, values):
    window(world, days="10", opens_at=time(8, 0), closes_at=time(17, 0))
    with refused(InvalidInput) as info:
        catalogue.set_exchange_window(world.shop, world.clerk, **values)
    assert english(info.value)
    assert world.shop.exchange_days == "10"


def test_window_messages_say_what_is_wrong(world):
    cases = {
        "Exchange days must be days of the month from 1 to 31, e.g. “10” or “10, 25”.": {
            "days": "32"
        },
        "Please choose weekdays from the list.": {"days": None, "weekdays": ["9"]},
        "Give both the opening and the closing time, or neither.": {
            "days": None,
            "opens_at": time(9, 0),
        },
        "The shop must open before it closes.": {
            "days": None,
            "opens_at": time(18, 0),
            "closes_at": time(8, 0),
        },
    }
    for message, values in cases.items():
        with refused(InvalidInput) as info:
            catalogue.set_exchange_window(world.shop, world.clerk, **values)
        assert english(info.value) == message
