"""Redemption at the counter: checkout, voids, the day's figures; what a refusal leaves behind."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    DayClosing,
    Entry,
    Identification,
    Item,
    MovementKind,
    Redemption,
    RedemptionLine,
    RedemptionVoid,
    Role,
    StockMovement,
    Transfer,
    TransferKind,
    TransferStatus,
)
from pointsmart.services import cards, catalogue, ledger, places, redemptions
from pointsmart.services.errors import (
    AlreadyResolved,
    CardRevoked,
    Forbidden,
    IdempotencyConflict,
    InsufficientPoints,
    InvalidInput,
    NotReversible,
    OutOfStock,
    OutsideExchangeWindow,
)
from pointsmart.timeutil import LOCAL_TZ, local_today, utcnow

# --- the books --------------------------------------------------------------------------------


def assert_shop_books_clean() -> None:
    """Points, stock, carts and voids all reconcile, in every direction."""
    assert ledger.check() == ([], [])
    assert catalogue.check_stock() == []
    assert redemptions.check_redemptions() == []
    for line in db.session.scalars(sa.select(RedemptionLine)):
        moved = dict(
            db.session.execute(
                sa.select(StockMovement.kind, sa.func.sum(StockMovement.quantity))
                .where(
                    StockMovement.redemption_id == line.redemption_id,
                    StockMovement.item_id == line.item_id,
                )
                .group_by(StockMovement.kind)
            ).all()
        )
        assert moved.get(MovementKind.REDEMPTION) == -line.quantity
        assert moved.get(MovementKind.RETURN, 0) == line.voided_quantity
    for record in db.session.scalars(sa.select(RedemptionVoid)):
        units = {m.item_id: m.quantity for m in record.movements}
        prices = {li.item_id: li.unit_points for li in record.redemption.lines}
        assert record.points == sum(prices[i] * q for i, q in units.items()) > 0
        refund = record.transfer
        assert (refund.kind, refund.status, refund.amount) == (
            TransferKind.REFUND,
            TransferStatus.POSTED,
            record.points,
        )
        assert refund.refunds_id == record.redemption.transfer_id
    for redemption in db.session.scalars(sa.select(Redemption)):
        refunded = sum(v.points for v in redemption.voids)
        assert refunded == redemption.voided_points <= redemption.total_points


@pytest.fixture(autouse=True)
def books_stay_clean(app):
    """Whatever a test did or was refused, everything reconciles afterwards."""
    yield
    db.session.rollback()
    assert_shop_books_clean()


@pytest.fixture
def world(make):
    """A town of two villages and a village shop stocked with three goods; committed.

    The household has 100 points; rice costs 10, oil 25, soap 3.
    """
    town = make.town()
    village = make.village(town)
    household = make.household(make.group(village))
    places.add_member(household, "王小明")
    elsewhere = make.village(town)
    shop = make.shop(village)
    w = SimpleNamespace(
        town=town,
        village=village,
        household=household,
        neighbour=make.household(household.group),
        shop=shop,
        clerk=make.staff(Role.CLERK, shop),
        clerk2=make.staff(Role.CLERK, shop),
        committee=make.staff(Role.COMMITTEE, village),
        cadre=make.staff(Role.CADRE, village),
        admin=make.staff(Role.ADMIN, town),
        elsewhere=elsewhere,
        far_household=make.household(make.group(elsewhere)),
        far_committee=make.staff(Role.COMMITTEE, elsewhere),
        far_shop=make.shop(elsewhere),
    )
    w.far_clerk = make.staff(Role.CLERK, w.far_shop)
    w.rice = stock(w, "大米", 10, 5)
    w.oil = stock(w, "食用油", 25, 3)
    w.soap = stock(w, "肥皂", 3, 10)
    w.far_item = stock(w, "面粉", 10, 5, shop=w.far_shop, actor=w.far_clerk)
    make.funded(household, 100)
    make.funded(w.neighbour, 50)
    make.funded(w.far_household, 100)
    db.session.commit()
    return w


_keys = itertools.count(1)


def key() -> str:
    return f"k-{next(_keys)}"


def stock(w, name, points, units, *, shop=None, actor=None) -> Item:
    shop, actor = shop or w.shop, actor or w.clerk
    item = catalogue.create_item(shop, catalogue.ItemData(name, "粮油", points), actor)
    catalogue.receive(item, actor, quantity_=units, key=key())
    return item


def english(error) -> str:
    with force_locale("en"):
        return str(error.message)


def buy(w, cart=None, **extra) -> Redemption:
    redemption, created = redemptions.checkout(
        shop=extra.pop("shop", w.shop),
        household=extra.pop("household", w.household),
        cart=cart if cart is not None else {w.rice.id: 2, w.oil.id: 1},
        clerk=extra.pop("clerk", w.clerk),
        key=extra.pop("key", None) or key(),
        **extra,
    )
    assert created
    return redemption


def void(redemption, actor, quantities=None, **extra) -> RedemptionVoid:
    record, created = redemptions.void(
        redemption,
        actor,
        reason=extra.pop("reason", "拿错了"),
        key=extra.pop("key", None) or key(),
        quantities=quantities,
    )
    assert created
    return record


def spendable(household) -> int:
    return ledger.balance_of(household).spendable


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def snapshot():
    """Everything a refused call must leave as it was: rows, balances, stock, voided units."""
    return (
        {m.__name__: count(m) for m in (Redemption, RedemptionLine, RedemptionVoid, Transfer)},
        count(Entry),
        count(StockMovement),
        dict(db.session.execute(sa.select(Account.id, Account.balance)).all()),
        dict(db.session.execute(sa.select(Item.id, Item.stock)).all()),
        dict(
            db.session.execute(sa.select(RedemptionLine.id, RedemptionLine.voided_quantity)).all()
        ),
    )


@contextmanager
def refused(error, *, late: bool = False):
    """Expect ``error``; after the rollback every view does, nothing may have changed.

    A refusal of the input comes before any write: nothing is even flushed. A ``late`` one
    (stock or points ran out in the guarded UPDATE) leaves writes that the rollback discards.
    """
    db.session.commit()
    before = snapshot()
    with pytest.raises(error) as info:
        yield info
    if not late:
        assert snapshot() == before
    db.session.rollback()
    assert snapshot() == before


def moved_to(redemption: Redemption, moment: datetime) -> None:
    """Pretend a redemption (its movements and transfer too) was made at another moment."""
    db.session.execute(
        sa.update(Redemption).where(Redemption.id == redemption.id).values(created_at=moment)
    )
    db.session.execute(
        sa.update(StockMovement)
        .where(StockMovement.redemption_id == redemption.id, StockMovement.void_id.is_(None))
        .values(created_at=moment)
    )
    db.session.execute(
        sa.update(Transfer)
        .where(Transfer.id == redemption.transfer_id)
        .values(created_at=moment, posted_at=moment)
    )
    db.session.commit()
    db.session.expire_all()


# --- checkout ---------------------------------------------------------------------------------


def test_checkout_debits_points_takes_stock_and_records_everything(world):
    member = world.household.members[1]
    card = cards.current_card(world.household)
    redemption, created = redemptions.checkout(
        shop=world.shop,
        household=world.household,
        cart={world.oil.id: 1, world.rice.id: 2},
        clerk=world.clerk,
        key="checkout-1",
        identified_by=Identification.QR,
        card=card,
        member=member,
        expected_total=45,
    )
    db.session.commit()
    db.session.expire_all()

    assert created
    assert redemption.total_points == 45
    assert redemption.balance_after == 55
    assert (redemption.shop_id, redemption.household_id, redemption.clerk_id) == (
        world.shop.id,
        world.household.id,
        world.clerk.id,
    )
    assert (redemption.member_id, redemption.card_id) == (member.id, card.id)
    assert redemption.identified_by is Identification.QR
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=55, honour=100)
    assert (world.rice.stock, world.oil.stock, world.soap.stock) == (3, 2, 10)
    lines = [
        (li.item_id, li.item_name, li.unit_points, li.quantity, li.voided_quantity)
        for li in redemption.lines
    ]
    assert lines == [(world.rice.id, "大米", 10, 2, 0), (world.oil.id, "食用油", 25, 1, 0)]
    assert sorted(
        (m.item_id, m.kind, m.quantity, m.user_id, m.void_id) for m in redemption.movements
    ) == sorted(
        [
            (world.rice.id, MovementKind.REDEMPTION, -2, world.clerk.id, None),
            (world.oil.id, MovementKind.REDEMPTION, -1, world.clerk.id, None),
        ]
    )
    transfer = redemption.transfer
    assert (transfer.kind, transfer.status, transfer.amount) == (
        TransferKind.REDEMPTION,
        TransferStatus.POSTED,
        45,
    )
    assert transfer.reason == "大米×2、食用油×1"  # in item order, as on the receipt
    assert (transfer.source_type, transfer.source_id) == ("redemption", redemption.id)
    assert (transfer.shop_id, transfer.member_id, transfer.recorded_by_id) == (
        world.shop.id,
        member.id,
        world.clerk.id,
    )
    shop_account = db.session.scalar(sa.select(Account).where(Account.shop_id == world.shop.id))
    assert shop_account.balance == 45
    assert redemptions.find("checkout-1").id == redemption.id
    assert not redemption.fully_voided
    assert redemption.net_points == 45
    assert_shop_books_clean()


def test_the_whole_balance_and_the_last_unit_may_be_redeemed(world):
    redemption = buy(
        world, {world.oil.id: 3, world.rice.id: 2, world.soap.id: 1}, expected_total=98
    )
    db.session.commit()
    assert redemption.balance_after == 2
    assert world.oil.stock == 0
    assert world.oil.is_low


def test_the_same_key_and_cart_redeems_once(world):
    first = buy(world, key="tap")
    db.session.commit()
    before = snapshot()

    again, created = redemptions.checkout(
        shop=world.shop,
        household=world.household,
        cart={world.oil.id: 1, world.rice.id: 2},  # the same cart, listed in another order
        clerk=world.clerk2,  # the other clerk's tablet retrying does not matter
        key="tap",
    )
    db.session.commit()

    assert not created
    assert again.id == first.id
    assert snapshot() == before


@pytest.mark.parametrize("change", ["cart", "quantity", "household", "member"])
def test_the_same_key_with_another_cart_is_a_conflict(world, change):
    buy(world, key="tap")
    cart = {world.rice.id: 2, world.oil.id: 1}
    extra = {}
    if change == "cart":
        cart = {world.rice.id: 2, world.soap.id: 1}
    elif change == "quantity":
        cart = {world.rice.id: 1, world.oil.id: 1}
    elif change == "household":
        extra["household"] = world.neighbour
    else:
        extra["member"] = world.household.members[1]
    extra.setdefault("household", world.household)
    with refused(IdempotencyConflict):
        redemptions.checkout(shop=world.shop, cart=cart, clerk=world.clerk, key="tap", **extra)


def test_checkout_refuses_a_revoked_card(world):
    old = cards.current_card(world.household)
    new = cards.reissue(world.household, world.committee, "卡丢了")
    with refused(CardRevoked) as info:
        buy(world, card=old, identified_by=Identification.QR)
    assert "no longer works" in english(info.value)
    with pytest.raises(CardRevoked):
        cards.resolve(old.token)
    with pytest.raises(CardRevoked):
        cards.resolve(old.display_code)
    assert cards.resolve(new.token.lower()).id == new.id
    db.session.rollback()

    buy(world, card=cards.current_card(world.household), identified_by=Identification.CODE)
    db.session.commit()


def test_checkout_refuses_another_households_card(world):
    with refused(InvalidInput) as info:
        buy(world, card=cards.current_card(world.neighbour), identified_by=Identification.QR)
    assert english(info.value) == "This card belongs to another household."


def test_a_village_shop_refuses_another_villages_card_and_household(world):
    far_card = cards.current_card(world.far_household)
    with refused(Forbidden) as info:
        buy(world, household=world.far_household, card=far_card, identified_by=Identification.QR)
    assert english(info.value) == (
        f"This household belongs to {world.elsewhere.name}; "
        f"{world.shop.name} serves {world.village.name} only."
    )
    # Nor may the far village's shop serve this one, even with its own clerk and goods.
    with refused(Forbidden):
        buy(world, {world.far_item.id: 1}, shop=world.far_shop, clerk=world.far_clerk)


def test_a_town_shop_serves_every_village_of_its_town_only(world, make):
    town_shop = make.shop(town=world.town)
    clerk = make.staff(Role.CLERK, town_shop)
    salt = stock(world, "盐", 2, 10, shop=town_shop, actor=clerk)
    stranger = make.household(make.group(make.village()))  # a village of another town
    make.funded(stranger, 10)

    buy(world, {salt.id: 1}, shop=town_shop, clerk=clerk)
    buy(world, {salt.id: 1}, shop=town_shop, clerk=clerk, household=world.far_household)
    db.session.commit()
    assert salt.stock == 8
    with refused(Forbidden) as info:
        buy(world, {salt.id: 1}, shop=town_shop, clerk=clerk, household=stranger)
    assert english(info.value).endswith(f"{town_shop.name} serves {world.town.name} only.")


@pytest.mark.parametrize("units", [0, -1, "abc", 1000, 1.5, "1.5", None, True])
def test_checkout_refuses_bad_quantities_even_past_parse_cart(world, units):
    with refused(InvalidInput) as info:
        buy(world, {world.rice.id: units})
    assert english(info.value).startswith("The quantity must be")
    with refused(InvalidInput) as info:
        buy(world, {world.rice.id: 1, world.soap.id: units})


@pytest.mark.parametrize("item_id", ["abc", 0, -5, None])
def test_checkout_refuses_bad_item_ids(world, item_id):
    with refused(InvalidInput):
        buy(world, {item_id: 1})


def test_parse_cart_merges_repeats_and_drops_untouched_lines(app):
    assert redemptions.parse_cart([("1", "2"), (1, 3)]) == {1: 5}
    assert redemptions.parse_cart([("3", "0"), ("4", ""), ("5", None), ("6", "２")]) == {6: 2}
    assert redemptions.parse_cart([(7, 999)]) == {7: 999}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([], "The cart is empty: add at least one item."),
        ([("1", "0"), ("2", "")], "The cart is empty: add at least one item."),
        ([("1", "-1")], "The quantity must be between 1 and 999."),
        ([("1", "abc")], "The quantity must be a whole number."),
        ([("1", "1.5")], "The quantity must be a whole number."),
        ([("1", "1000")], "The quantity must be between 1 and 999."),
        ([("1", "500"), ("1", "500")], "At most 999 units of one item can be redeemed at once."),
        ([("x", "1")], "The item must be a whole number."),
        ([("0", "1")], "The item must be between 1 and 4611686018427387904."),
        ([(str(i), "1") for i in range(1, 52)], "A cart can hold at most 50 different items."),
    ],
)
def test_parse_cart_refuses_bad_lines_with_a_message(app, pairs, message):
    with pytest.raises(InvalidInput) as info:
        redemptions.parse_cart(pairs)
    assert english(info.value) == message


def test_checkout_refuses_an_empty_cart(world):
    with refused(InvalidInput) as info:
        buy(world, {})
    assert english(info.value) == "The cart is empty: add at least one item."


def test_checkout_refuses_an_item_no_longer_on_sale(world):
    catalogue.update_item(
        world.oil, catalogue.ItemData("食用油", "粮油", 25, is_active=False), world.clerk
    )
    with refused(InvalidInput) as info:
        buy(world)
    assert english(info.value) == "“食用油” is no longer on sale."


@pytest.mark.parametrize("which", ["other shop", "unknown"])
def test_checkout_refuses_an_item_the_shop_does_not_have(world, which):
    item_id = world.far_item.id if which == "other shop" else 999_999
    with refused(InvalidInput) as info:
        buy(world, {world.rice.id: 1, item_id: 1})
    assert english(info.value) == "This shop has no such item."


def test_checkout_refuses_a_cart_over_the_balance(world):
    redemptions.precheck(
        world.shop, world.household, redemptions.price(world.shop, {world.oil.id: 3})
    )
    priced = redemptions.price(world.shop, {world.oil.id: 3, world.rice.id: 3})
    with pytest.raises(InsufficientPoints):
        redemptions.precheck(world.shop, world.household, priced)
    with refused(InsufficientPoints, late=True) as info:
        buy(world, {world.oil.id: 3, world.rice.id: 3})
    assert english(info.value) == "Not enough points: the household has 100, this needs 105."


def test_precheck_and_checkout_refuse_an_overdraw_where_deductions_may_go_negative(world):
    # A village may let deductions take a household below zero; a purchase never does.
    world.village.allow_negative_balance = True
    db.session.commit()
    priced = redemptions.price(world.shop, {world.oil.id: 3, world.rice.id: 3})
    with pytest.raises(InsufficientPoints):
        redemptions.precheck(world.shop, world.household, priced)
    with refused(InsufficientPoints, late=True):
        buy(world, {world.oil.id: 3, world.rice.id: 3})


def test_checkout_refuses_more_than_the_stock(world):
    with pytest.raises(OutOfStock):
        redemptions.precheck(
            world.shop, world.household, redemptions.price(world.shop, {world.oil.id: 4})
        )
    with refused(OutOfStock, late=True) as info:
        buy(world, {world.rice.id: 1, world.oil.id: 4})
    assert english(info.value) == "Not enough “食用油” in stock: 3 left, 4 wanted."


def test_checkout_refuses_outside_the_exchange_window(world):
    today = datetime.now(LOCAL_TZ).day
    other_day = 1 if today != 1 else 2
    catalogue.set_exchange_window(world.shop, world.clerk, days=str(other_day))
    with refused(OutsideExchangeWindow) as info:
        buy(world)
    assert english(info.value) == (
        f"{world.shop.name} exchanges points only on day {other_day} of each month. "
        "Nothing was redeemed."
    )
    catalogue.set_exchange_window(world.shop, world.clerk, days=f"{other_day}, {today}")
    buy(world)
    db.session.commit()


@pytest.mark.parametrize("who", ["far_clerk", "committee", "cadre", "admin"])
def test_only_a_clerk_of_the_shop_checks_out(world, who):
    with refused(Forbidden):
        buy(world, clerk=getattr(world, who))


def test_checkout_refuses_changed_prices(world):
    shown = redemptions.price(world.shop, {world.rice.id: 2, world.oil.id: 1}).total
    assert shown == 45  # what the review page showed
    catalogue.update_item(world.rice, catalogue.ItemData("大米", "粮油", 12), world.clerk)
    with refused(InvalidInput) as info:
        buy(world, expected_total=shown)
    assert english(info.value) == (
        "Prices changed while the cart was open: the total is now 49 points. "
        "Please check the cart and confirm again."
    )
    assert buy(world, expected_total=49).total_points == 49
    db.session.commit()


def test_checkout_refuses_an_inactive_household_or_shop(world):
    world.household.is_active = False
    with refused(InvalidInput) as info:
        buy(world)
    assert english(info.value) == "This household is no longer active."
    world.household.is_active = True
    world.shop.is_active = False
    with refused(InvalidInput) as info:
        buy(world)
    assert english(info.value) == "This shop is closed."


def test_checkout_refuses_another_households_member(world):
    with refused(InvalidInput):
        buy(world, member=world.neighbour.members[0])


@pytest.mark.parametrize("bad", ["", "  ", "k" * 121, None])
def test_checkout_needs_a_key(world, bad):
    with refused(InvalidInput):
        redemptions.checkout(
            shop=world.shop,
            household=world.household,
            cart={world.rice.id: 1},
            clerk=world.clerk,
            key=bad,
        )


def test_a_key_too_long_for_its_ledger_transfer_is_refused_before_anything(world):
    # The transfer's key is "checkout:" or "void:" plus the form's key, within the same limit.
    longest = "k" * (ledger.MAX_KEY_LENGTH - len("checkout:"))
    redemption = buy(world, key=longest)
    record = void(redemption, world.clerk, {redemption.lines[0].id: 1}, key=longest)
    db.session.commit()
    assert redemption.transfer.idempotency_key == "checkout:" + longest
    assert record.transfer.idempotency_key == "void:" + longest

    too_long = "k" * ledger.MAX_KEY_LENGTH
    with refused(InvalidInput) as info:
        buy(world, key=too_long)
    assert english(info.value) == "The request has no valid idempotency key."
    with refused(InvalidInput):
        void(redemption, world.clerk, key=too_long)


def test_checkout_refuses_a_total_beyond_one_records_limit(world, make):
    gold = stock(world, "金条", ledger.MAX_POINTS, 5)
    with refused(InvalidInput) as info:
        buy(world, {gold.id: 2})
    assert english(info.value) == f"At most {ledger.MAX_POINTS} points can move in one record."


# --- voids ------------------------------------------------------------------------------------


def lines_of(redemption):
    return {line.item_id: line for line in redemption.lines}


def test_void_part_of_a_line(world):
    redemption = buy(world)  # rice ×2, oil ×1: 45 points
    db.session.commit()
    rice = lines_of(redemption)[world.rice.id]

    record = void(redemption, world.clerk, {rice.id: 1}, reason="多拿了一袋")
    db.session.commit()
    db.session.expire_all()

    assert record.points == 10
    assert (record.voided_by_id, record.reason) == (world.clerk.id, "多拿了一袋")
    assert ledger.balance_of(world.household) == ledger.Balance(spendable=65, honour=100)
    assert world.rice.stock == 4
    assert (rice.voided_quantity, rice.remaining) == (1, 1)
    [movement] = record.movements
    assert (movement.kind, movement.item_id, movement.quantity, movement.reason) == (
        MovementKind.RETURN,
        world.rice.id,
        1,
        "多拿了一袋",
    )
    assert movement.redemption_id == redemption.id
    refund = record.transfer
    assert (refund.kind, refund.amount, refund.refunds_id) == (
        TransferKind.REFUND,
        10,
        redemption.transfer_id,
    )
    assert (refund.source_type, refund.source_id) == ("redemption", redemption.id)
    assert (redemption.voided_points, redemption.net_points) == (10, 35)
    assert redemption.transfer.reversed_by is None  # the original stays as it was


def test_void_a_whole_line_then_everything_left(world):
    redemption = buy(world, {world.rice.id: 2, world.oil.id: 1, world.soap.id: 4})  # 57
    db.session.commit()
    lines = lines_of(redemption)

    void(redemption, world.clerk, {lines[world.oil.id].id: "1", lines[world.rice.id].id: ""})
    db.session.commit()
    assert spendable(world.household) == 43 + 25
    assert (world.oil.stock, world.rice.stock) == (3, 3)

    void(redemption, world.clerk, {lines[world.rice.id].id: 1})
    rest = void(redemption, world.committee)  # everything not yet voided: rice 1, soap 4
    db.session.commit()
    db.session.expire_all()

    assert rest.points == 10 + 12
    assert sorted((m.item_id, m.quantity) for m in rest.movements) == sorted(
        [(world.rice.id, 1), (world.soap.id, 4)]
    )
    assert redemption.fully_voided
    assert (redemption.voided_points, redemption.net_points) == (57, 0)
    assert spendable(world.household) == 100
    assert (world.rice.stock, world.oil.stock, world.soap.stock) == (5, 3, 10)
    refunds = db.session.scalars(
        sa.select(Transfer.amount).where(Transfer.refunds_id == redemption.transfer_id)
    ).all()
    assert sorted(refunds) == [10, 22, 25]
    assert sum(refunds) == redemption.total_points


def test_voiding_more_than_is_left_is_refused(world):
    redemption = buy(world)
    db.session.commit()
    rice = lines_of(redemption)[world.rice.id]
    oil = lines_of(redemption)[world.oil.id]
    void(redemption, world.clerk, {rice.id: 1})
    db.session.commit()

    with refused(AlreadyResolved, late=True) as info:
        void(redemption, world.clerk, {oil.id: 1, rice.id: 2})
    assert english(info.value) == "“大米” has already been voided; nothing was changed."
    with refused(InvalidInput):
        void(redemption, world.clerk, {rice.id: 3})  # more than the line ever had

    void(redemption, world.clerk)  # the rest
    db.session.commit()
    with refused(AlreadyResolved) as info:
        void(redemption, world.clerk)
    assert english(info.value) == "Everything in this redemption has already been voided."
    with refused(AlreadyResolved, late=True):
        void(redemption, world.committee, {oil.id: 1})
    assert spendable(world.household) == 100


@pytest.mark.parametrize(
    "quantities",
    [{}, {"line": 0}, {"line": ""}, {"line": -1}, {"line": "abc"}, {"other": 1}, {"x": 1}],
)
def test_void_refuses_bad_lines(world, quantities):
    redemption = buy(world)
    other = buy(world, {world.soap.id: 1})
    db.session.commit()
    ids = {"line": redemption.lines[0].id, "other": other.lines[0].id, "x": "x"}
    with refused(InvalidInput):
        void(redemption, world.clerk, {ids[k]: v for k, v in quantities.items()})


@pytest.mark.parametrize("reason", ["", "  ", None, "因" * 201])
def test_void_needs_a_reason(world, reason):
    redemption = buy(world)
    with refused(InvalidInput):
        void(redemption, world.clerk, reason=reason)


@pytest.mark.parametrize("everything", [False, True], ids=["some", "everything"])
def test_the_same_void_sent_twice_voids_once(world, everything):
    redemption = buy(world)
    db.session.commit()
    quantities = None if everything else {lines_of(redemption)[world.rice.id].id: 1}
    first = void(redemption, world.clerk, quantities, key="void-1")
    db.session.commit()
    before = snapshot()

    again, created = redemptions.void(
        redemption, world.clerk, reason="拿错了", key="void-1", quantities=quantities
    )
    db.session.commit()

    assert not created
    assert again.id == first.id
    assert snapshot() == before


def test_a_void_key_reused_for_other_units_is_a_conflict(world):
    redemption = buy(world)
    db.session.commit()
    rice = lines_of(redemption)[world.rice.id]
    void(redemption, world.clerk, {rice.id: 1}, key="void-1")
    db.session.commit()
    with refused(IdempotencyConflict):
        void(redemption, world.clerk, {rice.id: 2}, key="void-1")
    with refused(IdempotencyConflict):
        void(redemption, world.clerk, {rice.id: 1}, key="void-1", reason="另一个原因")


def test_a_clerk_voids_only_on_the_day_a_committee_member_any_day(world):
    redemption = buy(world)
    db.session.commit()
    assert redemptions.can_void(world.clerk, redemption)
    assert redemptions.can_void(world.clerk2, redemption)
    moved_to(redemption, utcnow() - timedelta(days=1))

    assert not redemptions.can_void(world.clerk, redemption)
    with refused(Forbidden) as info:
        void(redemption, world.clerk)
    assert english(info.value) == (
        "A clerk can void a redemption only on the day it was made; "
        "ask a committee member of the village."
    )
    for who in ("far_clerk", "far_committee", "cadre", "admin"):
        assert not redemptions.can_void(getattr(world, who), redemption)
        with refused(Forbidden):
            void(redemption, getattr(world, who))

    record = void(redemption, world.committee)
    db.session.commit()
    assert record.points == 45
    assert spendable(world.household) == 100


def test_a_clerk_of_another_shop_cannot_void_today(world, make):
    redemption = buy(world)
    db.session.commit()
    with refused(Forbidden):
        void(redemption, world.far_clerk)


def test_a_shop_redemption_is_not_reversed_by_the_ledger(world):
    redemption = buy(world)
    record = void(redemption, world.clerk, {lines_of(redemption)[world.rice.id].id: 1})
    db.session.commit()
    cases = [
        (redemption.transfer, world.committee),
        (redemption.transfer, world.clerk),
        (record.transfer, world.committee),
    ]
    for transfer, actor in cases:
        with refused(NotReversible) as info:
            ledger.reverse(transfer, actor, "退货", key=key())
        assert "voiding it from its receipt" in english(info.value)
    with refused(Forbidden):  # a clerk never reverses anything but a plain redemption
        ledger.reverse(record.transfer, world.clerk, "退货", key=key())


def test_a_refund_never_gives_back_more_than_was_redeemed(world):
    redemption = buy(world)
    db.session.commit()
    with refused(InvalidInput) as info:
        ledger.refund(
            redemption.transfer,
            46,
            world.committee,
            "退货",
            key=key(),
            source=("redemption", redemption.id),
        )
    assert english(info.value) == "A refund cannot give back more than was redeemed."
    # Through the shop's voids, every unit at most once: at most the total in all.
    rice = lines_of(redemption)[world.rice.id]
    void(redemption, world.clerk, {rice.id: 2})
    with refused(AlreadyResolved, late=True):
        void(redemption, world.clerk2, {rice.id: 1})
    void(redemption, world.clerk2)
    db.session.commit()
    refunded = db.session.scalar(
        sa.select(sa.func.sum(Transfer.amount)).where(Transfer.refunds_id == redemption.transfer_id)
    )
    assert refunded == redemption.total_points == 45


def test_only_a_posted_redemption_is_refunded(world, make):
    award = make.funded(world.household, 5)
    with refused(NotReversible):
        ledger.refund(award, 5, world.committee, "退货", key=key(), source=("redemption", 1))


# --- the day ----------------------------------------------------------------------------------


def test_day_summary_counts_a_busy_day(world):
    today = local_today()
    tea = catalogue.create_item(world.shop, catalogue.ItemData("茶叶", "其他", 50), world.clerk)
    a = buy(world)  # household: rice ×2, oil ×1 = 45
    b = buy(world, {world.soap.id: 4}, household=world.neighbour)  # neighbour: soap ×4 = 12
    c = buy(world, {world.rice.id: 1})  # household again: rice ×1 = 10
    void(a, world.clerk, {lines_of(a)[world.rice.id].id: 1})  # 10 back, rice +1
    void(c, world.clerk)  # 10 back, rice +1
    catalogue.receive(world.rice, world.clerk, quantity_=6, key=key(), cost_yuan="30")
    catalogue.write_off(world.soap, world.clerk, quantity_=1, reason="破损", key=key())
    db.session.commit()

    day = redemptions.day_summary(world.shop, today)

    assert [r.id for r in day.redemptions] == [a.id, b.id, c.id]
    assert len(day.voids) == 2
    assert day.households == 2
    assert (day.redeemed_points, day.voided_points, day.net_points) == (67, 20, 47)
    items = {i.name: i for i in day.items}
    rows = {
        name: (i.received, i.redeemed, i.returned, i.written_off, i.points, i.stock_end)
        for name, i in items.items()
    }
    assert rows == {
        # received includes the fixture's intake this morning
        "大米": (5 + 6, 3, 2, 0, 30 - 20, 5 - 3 + 2 + 6),
        "食用油": (3, 1, 0, 0, 25, 2),
        "肥皂": (10, 4, 0, 1, 12, 5),
        "茶叶": (0, 0, 0, 0, 0, 0),
    }
    assert items["大米"].net_units == 1
    assert [i.name for i in day.items][-1] == "茶叶"  # untouched goods come last
    assert items["茶叶"].low and not items["大米"].low
    assert tea.stock == 0
    for i in day.items:
        assert i.stock_end == db.session.get(Item, i.item_id).stock  # nothing happened since
    # Another shop's day is its own.
    assert redemptions.day_summary(world.far_shop, today).redemptions == []


def test_day_summary_of_a_past_day_shows_its_own_stock_at_its_end(world):
    # 2026-03-10 in Beijing runs from 16:00 UTC on the 9th to 16:00 UTC on the 10th.
    day = datetime(2026, 3, 10).date()
    early = datetime(2026, 3, 9, 16, 30, tzinfo=UTC)  # 00:30 on the 10th in Beijing
    before = datetime(2026, 3, 9, 15, 30, tzinfo=UTC)  # 23:30 on the 9th in Beijing
    db.session.execute(sa.update(StockMovement).values(created_at=before))  # the intakes
    db.session.commit()
    first = buy(world, {world.rice.id: 2})
    db.session.commit()
    moved_to(first, early)
    later = buy(world, {world.rice.id: 1, world.oil.id: 1})  # today, long after that day
    catalogue.write_off(world.rice, world.clerk, quantity_=1, reason="过期", key=key())
    db.session.commit()
    assert world.rice.stock == 1

    summary = redemptions.day_summary(world.shop, day)
    items = {i.name: i for i in summary.items}
    assert [r.id for r in summary.redemptions] == [first.id]
    assert (items["大米"].received, items["大米"].redeemed, items["大米"].stock_end) == (0, 2, 3)
    assert (items["食用油"].redeemed, items["食用油"].stock_end) == (0, 3)
    assert items["大米"].points == 20

    eve = redemptions.day_summary(world.shop, datetime(2026, 3, 9).date())
    items = {i.name: i for i in eve.items}
    assert eve.redemptions == []
    assert (items["大米"].received, items["大米"].stock_end) == (5, 5)

    now = {i.name: i for i in redemptions.day_summary(world.shop, local_today()).items}
    assert (now["大米"].redeemed, now["大米"].written_off, now["大米"].stock_end) == (1, 1, 1)
    assert later.id in [
        r.id for r in redemptions.day_summary(world.shop, local_today()).redemptions
    ]


def test_a_void_today_of_an_older_redemption_counts_today(world):
    old = buy(world, {world.oil.id: 2})
    db.session.commit()
    moved_to(old, utcnow() - timedelta(days=3))
    void(old, world.committee, {old.lines[0].id: 1})
    db.session.commit()

    day = redemptions.day_summary(world.shop, local_today())
    items = {i.name: i for i in day.items}
    assert day.redemptions == []
    assert (day.redeemed_points, day.voided_points, day.net_points) == (0, 25, -25)
    assert (items["食用油"].returned, items["食用油"].points) == (1, -25)


def test_close_day_keeps_the_first_closing(world):
    today = local_today()
    buy(world)
    db.session.commit()
    closing, created = redemptions.close_day(world.shop, today, world.clerk)
    db.session.commit()
    assert created
    assert closing.closed_by_id == world.clerk.id
    figures = dict(closing.figures)
    assert (figures["redemptions"], figures["redeemed_points"], figures["net_points"]) == (
        1,
        45,
        45,
    )
    assert {i["name"]: i["stock_end"] for i in figures["items"]} == {
        "大米": 3,
        "食用油": 2,
        "肥皂": 10,
    }

    buy(world, {world.soap.id: 1})
    db.session.commit()
    again, created = redemptions.close_day(world.shop, today, world.clerk2)
    db.session.commit()

    assert not created
    assert again.id == closing.id
    assert again.figures == figures
    assert again.closed_by_id == world.clerk.id
    assert count(DayClosing) == 1
    assert redemptions.closing_of(world.shop, today).id == closing.id


def test_close_day_refuses_the_future_and_outsiders(world):
    today = local_today()
    with refused(InvalidInput):
        redemptions.close_day(world.shop, today + timedelta(days=1), world.clerk)
    for who in ("far_clerk", "committee", "cadre"):
        with refused(Forbidden):
            redemptions.close_day(world.shop, today, getattr(world, who))
    closing, created = redemptions.close_day(world.shop, today - timedelta(days=1), world.admin)
    db.session.commit()
    assert created and closing.figures["redemptions"] == 0


def test_a_key_of_another_shop_reveals_nothing(world):
    sale = buy(world, key="shared-key")
    db.session.commit()
    # Keys are random per form; a colliding one elsewhere is refused, never answered.
    with refused(IdempotencyConflict):
        redemptions.checkout(
            shop=world.far_shop,
            household=world.far_household,
            cart={world.far_item.id: 1},
            clerk=world.far_clerk,
            key="shared-key",
        )
    record = void(sale, world.clerk, {sale.lines[0].id: 1}, key="void-key")
    db.session.commit()
    with refused(Forbidden):
        redemptions.void(sale, world.far_clerk, reason="试探", key="void-key", quantities=None)
    assert record.points == 10


@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("UPDATE redemption_lines SET voided_quantity = voided_quantity + 1", "units voided"),
        ("UPDATE redemption_voids SET points = points + 1", "refund transfer"),
    ],
)
def test_check_redemptions_names_voids_that_disagree(world, tamper, expected):
    sale = buy(world, {world.rice.id: 3})
    void(sale, world.clerk, {sale.lines[0].id: 1})
    db.session.commit()
    assert redemptions.check_redemptions() == []
    db.session.execute(sa.text(tamper))
    problems = redemptions.check_redemptions()
    assert any(expected in p for p in problems), problems
    db.session.rollback()


def test_the_day_report_flags_low_stock_as_it_stood_that_day(world):
    from datetime import timedelta

    rice = world.rice
    rice.low_stock_at = 2
    db.session.execute(
        sa.update(StockMovement)
        .where(StockMovement.item_id == rice.id)
        .values(created_at=utcnow() - timedelta(days=1))
    )
    db.session.commit()
    yesterday = local_today() - timedelta(days=1)
    # Today's sale leaves 2 (low); yesterday ended with 5 (not low).
    buy(world, {rice.id: 3})
    db.session.commit()
    by_name = {i.name: i for i in redemptions.day_summary(world.shop, yesterday).items}
    assert (by_name["大米"].stock_end, by_name["大米"].low) == (5, False)
    by_name = {i.name: i for i in redemptions.day_summary(world.shop, local_today()).items}
    assert (by_name["大米"].stock_end, by_name["大米"].low) == (2, True)
