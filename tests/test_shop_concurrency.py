"""The love supermarket under real parallel requests: never overdraw, oversell or redeem twice.

Each thread loads its objects, meets the others at a barrier, then calls the shop service with
what it loaded and commits (see ``race`` in test_concurrency). On PostgreSQL the row locks are
real and the guarded UPDATEs decide; on SQLite writers queue. The outcome must be right on both.
"""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    AccountKind,
    Household,
    Item,
    Redemption,
    RedemptionLine,
    RedemptionVoid,
    Role,
    Shop,
    StockMovement,
    Transfer,
    User,
)
from pointsmart.services import catalogue, ledger, redemptions
from pointsmart.services.errors import (
    AlreadyResolved,
    InsufficientPoints,
    OutOfStock,
)
from tests import test_concurrency
from tests.test_concurrency import THREADS, assert_books_clean, race

#: The usual app with a connection pool that holds every thread's connection at once.
app = test_concurrency.app

pytestmark = pytest.mark.concurrency


@pytest.fixture
def counter(make):
    """A village shop with THREADS clerks, THREADS households of 100 points and two goods."""
    village = make.village()
    group = make.group(village)
    shop = make.shop(village)
    clerks = [make.staff(Role.CLERK, shop) for _ in range(THREADS)]
    households = [make.household(group) for _ in range(THREADS)]
    committee = make.staff(Role.COMMITTEE, village)
    for household in households:
        make.funded(household, 100)
    rice = new_item(shop, clerks[0], "大米", 10, 100)
    tea = new_item(shop, clerks[0], "茶叶", 20, 0)
    k = {
        "shop": shop.id,
        "clerks": [c.id for c in clerks],
        "households": [h.id for h in households],
        "committee": committee.id,
        "rice": rice.id,
        "tea": tea.id,
    }
    db.session.commit()  # ids read first: reading after the commit would hold SQLite's lock
    return k


def new_item(shop, clerk, name: str, points: int, units: int) -> Item:
    item = catalogue.create_item(shop, catalogue.ItemData(name, "其他", points), clerk)
    if units:
        catalogue.receive(item, clerk, quantity_=units, key=f"intake-{name}-{units}")
    return item


def restock(k, item: str, units: int) -> None:
    """Set an item's stock by a recorded movement (intake or write-off) and commit."""
    row = db.session.get(Item, k[item])
    clerk = db.session.get(User, k["clerks"][0])
    change = units - row.stock
    if change > 0:
        catalogue.receive(row, clerk, quantity_=change, key=f"restock-{item}-{units}")
    elif change < 0:
        catalogue.write_off(row, clerk, quantity_=-change, reason="盘点", key=f"count-{item}")
    db.session.commit()


def fund(k, i: int, points: int, make) -> None:
    """Give household i exactly ``points`` spendable points (spending the rest at the counter)."""
    household = db.session.get(Household, k["households"][i])
    balance = ledger.balance_of(household).spendable
    if balance > points:
        clerk = db.session.get(User, k["clerks"][0])
        shop = db.session.get(Shop, k["shop"])
        ledger.redeem(
            household=household,
            shop=shop,
            points=balance - points,
            clerk=clerk,
            key=f"spend-{i}",
            reason="手工兑换",
        )
    elif balance < points:
        make.funded(household, points - balance)
    db.session.commit()


def load_counter(k, i: int, household: int | None = None, clerk: int | None = None):
    """Load what a clerk's request has in hand: the shop, the household, the clerk's grants."""
    household = db.session.get(Household, k["households"][i if household is None else household])
    household.group.village  # noqa: B018  (loaded now: the thread acts on this view)
    clerk = db.session.get(User, k["clerks"][i if clerk is None else clerk])
    clerk.grants  # noqa: B018
    return db.session.get(Shop, k["shop"]), household, clerk


def checkout(shop, household, clerk, cart, key, created=None):
    redemption, was_created = redemptions.checkout(
        shop=shop, household=household, cart=cart, clerk=clerk, key=key
    )
    if created is not None:
        created.append(was_created)
    return redemption


def count(model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def stock_of(k, item: str) -> int:
    return db.session.scalar(sa.select(Item.stock).where(Item.id == k[item]))


def spendable(k, i: int) -> int:
    return ledger.balance_of(db.session.get(Household, k["households"][i])).spendable


def assert_shop_clean(app) -> None:
    """The books, the stock and the carts reconcile; nothing went below zero; the CLI agrees."""
    db.session.expire_all()
    assert_books_clean()
    assert catalogue.check_stock() == []
    assert redemptions.check_redemptions() == []
    assert db.session.scalar(sa.select(sa.func.min(Item.stock))) >= 0
    lowest = db.session.scalar(
        sa.select(sa.func.min(Account.balance)).where(
            Account.kind == AccountKind.HOUSEHOLD_SPENDABLE
        )
    )
    assert lowest >= 0
    # Units voided never exceed units redeemed, and match the returns on the shelf.
    for line in db.session.scalars(sa.select(RedemptionLine)):
        returned = db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(StockMovement.quantity), 0)).where(
                StockMovement.redemption_id == line.redemption_id,
                StockMovement.item_id == line.item_id,
                StockMovement.void_id.is_not(None),
            )
        )
        assert 0 <= line.voided_quantity == returned <= line.quantity
    db.session.rollback()
    result = app.test_cli_runner().invoke(args=["check-ledger"])
    assert result.exit_code == 0, result.output


# --- checkout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, THREADS])
def test_clerks_checking_out_for_one_household_never_overdraw(app, make, counter, n):
    k = counter
    fund(k, 0, 50, make)  # covers one cart of 30 points, not two

    def act(i, shop, household, clerk):
        return checkout(shop, household, clerk, {k["rice"]: 3}, key=f"till-{i}")

    outcomes = race(app, n, lambda i: load_counter(k, i, household=0), act)

    succeeded = [o for o in outcomes if o.error is None]
    assert len(succeeded) == 1
    for outcome in outcomes:
        if outcome.error is not None:
            assert isinstance(outcome.error, InsufficientPoints), outcome.message_en
            assert outcome.message_en == "Not enough points: the household has 20, this needs 30."
    assert spendable(k, 0) == 20
    assert stock_of(k, "rice") == 97
    assert count(Redemption) == 1
    redemption = db.session.get(Redemption, succeeded[0].transfer_id)
    assert (redemption.total_points, redemption.balance_after) == (30, 20)
    assert_shop_clean(app)


@pytest.mark.parametrize(("units", "n"), [(1, 2), (3, THREADS)], ids=["last-unit", "last-three"])
def test_clerks_taking_the_last_units_never_oversell(app, make, counter, units, n):
    k = counter
    restock(k, "tea", units)

    def act(i, shop, household, clerk):
        return checkout(shop, household, clerk, {k["tea"]: 1}, key=f"tea-{i}")

    outcomes = race(app, n, lambda i: load_counter(k, i), act)

    succeeded = [i for i, o in enumerate(outcomes) if o.error is None]
    assert len(succeeded) == units
    for outcome in outcomes:
        if outcome.error is not None:
            assert isinstance(outcome.error, OutOfStock), outcome.message_en
            assert outcome.message_en == "Not enough “茶叶” in stock: 0 left, 1 wanted."
    assert stock_of(k, "tea") == 0
    assert count(Redemption) == units
    for i in range(n):  # winners paid once, losers nothing
        assert spendable(k, i) == (80 if i in succeeded else 100)
    assert_shop_clean(app)


def test_overlapping_carts_neither_oversell_nor_deadlock(app, make, counter):
    k = counter
    restock(k, "rice", 12)
    restock(k, "tea", 12)
    # Carts of both goods in different amounts, so the threads contend for both rows at once.
    carts = [{k["rice"]: 1 + i % 3, k["tea"]: 1 + (i + 1) % 2} for i in range(THREADS)]

    def act(i, shop, household, clerk):
        return checkout(shop, household, clerk, carts[i], key=f"mix-{i}")

    outcomes = race(app, THREADS, lambda i: load_counter(k, i), act)

    won = [i for i, o in enumerate(outcomes) if o.error is None]
    for outcome in outcomes:
        assert outcome.error is None or isinstance(outcome.error, OutOfStock), outcome.message_en
    assert won  # someone was served
    for item in ("rice", "tea"):
        sold = sum(carts[i][k[item]] for i in won)
        assert sold <= 12
        assert stock_of(k, item) == 12 - sold
    for i in range(THREADS):
        paid = 10 * carts[i][k["rice"]] + 20 * carts[i][k["tea"]] if i in won else 0
        assert spendable(k, i) == 100 - paid
    assert count(Redemption) == len(won)
    assert_shop_clean(app)


def test_a_checkout_retried_at_once_with_one_key_redeems_once(app, make, counter):
    k = counter
    transfers_before = count(Transfer)
    db.session.commit()
    created: list[bool] = []

    def act(i, shop, household, clerk):
        # One clerk's tablet (or the same page on two) sending the same confirmation again.
        return checkout(shop, household, clerk, {k["rice"]: 2}, key="double-tap", created=created)

    outcomes = race(app, THREADS, lambda i: load_counter(k, i, household=0, clerk=i % 2), act)

    assert [o.error for o in outcomes] == [None] * THREADS
    assert len({o.transfer_id for o in outcomes}) == 1  # every caller gets the one redemption
    assert sorted(created) == [False] * (THREADS - 1) + [True]
    assert count(Redemption) == 1
    assert count(Transfer) == transfers_before + 1
    assert spendable(k, 0) == 80
    assert stock_of(k, "rice") == 98
    assert_shop_clean(app)


# --- voids ------------------------------------------------------------------------------------


def sold(k, cart, i: int = 0) -> tuple[int, int]:
    """Make a committed redemption for household i; return its id and its first line's id."""
    shop, household, clerk = load_counter(k, i)
    redemption = checkout(shop, household, clerk, cart, key=f"sale-{i}-{sorted(cart.items())}")
    made = redemption.id, redemption.lines[0].id
    db.session.commit()
    return made


def load_void(k, redemption_id: int, actor_id: int):
    redemption = db.session.get(Redemption, redemption_id)
    for line in redemption.lines:
        line.item  # noqa: B018
    redemption.household.group.village  # noqa: B018
    redemption.shop  # noqa: B018
    redemption.transfer.village, redemption.transfer.shop  # noqa: B018
    actor = db.session.get(User, actor_id)
    actor.grants  # noqa: B018
    return redemption, actor


def void(redemption, actor, quantities, key, created=None):
    record, was_created = redemptions.void(
        redemption, actor, reason="拿错了", key=key, quantities=quantities
    )
    if created is not None:
        created.append(was_created)
    return record


@pytest.mark.parametrize(
    ("units", "winners"), [(3, 1), (1, 3), (None, 1)], ids=["whole-line", "one-each", "everything"]
)
def test_concurrent_voids_return_each_unit_at_most_once(app, make, counter, units, winners):
    k = counter
    redemption_id, line_id = sold(k, {k["rice"]: 3})
    assert (spendable(k, 0), stock_of(k, "rice")) == (70, 97)
    db.session.commit()  # end the read: on SQLite it would hold the write lock
    actors = k["clerks"][:10] + [k["committee"]]

    def act(i, redemption, actor):
        quantities = None if units is None else {line_id: units}
        return void(redemption, actor, quantities, key=f"void-{i}")

    outcomes = race(app, len(actors), lambda i: load_void(k, redemption_id, actors[i]), act)

    assert sum(o.error is None for o in outcomes) == winners
    for outcome in outcomes:
        if outcome.error is not None:
            assert isinstance(outcome.error, AlreadyResolved), outcome.message_en
    line = db.session.get(RedemptionLine, line_id)
    assert line.voided_quantity == 3
    assert count(RedemptionVoid) == winners
    assert spendable(k, 0) == 100
    assert stock_of(k, "rice") == 100
    assert_shop_clean(app)


def test_a_void_retried_at_once_with_one_key_voids_once(app, make, counter):
    k = counter
    redemption_id, line_id = sold(k, {k["rice"]: 2})
    created: list[bool] = []

    def act(i, redemption, actor):
        return void(redemption, actor, None, key="void-twice", created=created)

    outcomes = race(app, 10, lambda i: load_void(k, redemption_id, k["clerks"][0]), act)

    assert [o.error for o in outcomes] == [None] * 10
    assert len({o.transfer_id for o in outcomes}) == 1
    assert sorted(created) == [False] * 9 + [True]
    assert count(RedemptionVoid) == 1
    assert (spendable(k, 0), stock_of(k, "rice")) == (100, 100)
    assert_shop_clean(app)


def test_checkouts_voids_intakes_and_write_offs_at_once_keep_the_stock(app, make, counter):
    k = counter
    restock(k, "tea", 4)
    sales = [sold(k, {k["tea"]: 1}, i) for i in range(4)]  # the shelf now holds none
    assert stock_of(k, "tea") == 0
    restock(k, "tea", 2)  # commits
    kinds = ["checkout", "void", "intake", "write-off"]

    def load(i):
        shop, household, clerk = load_counter(k, i)
        redemption = load_void(k, sales[(i // 4) % 4][0], k["clerks"][i])[0]
        return shop, household, clerk, redemption, db.session.get(Item, k["tea"])

    def act(i, shop, household, clerk, redemption, item):
        kind = kinds[i % 4]
        if kind == "checkout":
            return checkout(shop, household, clerk, {item.id: 1}, key=f"busy-{i}")
        if kind == "void":
            return void(redemption, clerk, {redemption.lines[0].id: 1}, key=f"busy-{i}")
        if kind == "intake":
            return catalogue.receive(item, clerk, quantity_=1, key=f"busy-{i}", cost_yuan="3.5")
        return catalogue.write_off(item, clerk, quantity_=1, reason="破损", key=f"busy-{i}")

    outcomes = race(app, THREADS, load, act)

    effect = {"checkout": -1, "void": +1, "intake": +1, "write-off": -1}
    done = Counter(kinds[i % 4] for i, o in enumerate(outcomes) if o.error is None)
    for i, outcome in enumerate(outcomes):
        if outcome.error is not None:
            expected = AlreadyResolved if kinds[i % 4] == "void" else OutOfStock
            assert isinstance(outcome.error, expected), (kinds[i % 4], outcome.message_en)
    assert done["intake"] == THREADS // 4
    assert done["void"] == 4  # one of the five voids found its unit already back
    assert stock_of(k, "tea") == 2 + sum(effect[kind] * n for kind, n in done.items())
    assert_shop_clean(app)


# --- stock ------------------------------------------------------------------------------------


def test_an_intake_sent_twice_at_once_adds_once(app, make, counter):
    k = counter

    def load(i):
        return db.session.get(Item, k["tea"]), db.session.get(User, k["clerks"][i % 3])

    def act(i, item, clerk):
        return catalogue.receive(
            item, clerk, quantity_=5, key="delivery-1", cost_yuan="12.5", funding="donated"
        )

    outcomes = race(app, 10, load, act)

    assert [o.error for o in outcomes] == [None] * 10
    assert len({o.transfer_id for o in outcomes}) == 1
    assert count(StockMovement, StockMovement.idempotency_key == "delivery-1") == 1
    assert stock_of(k, "tea") == 5
    assert_shop_clean(app)


def test_write_offs_at_once_never_take_the_stock_below_zero(app, make, counter):
    k = counter
    restock(k, "tea", 5)

    def load(i):
        return db.session.get(Item, k["tea"]), db.session.get(User, k["clerks"][i])

    def act(i, item, clerk):
        return catalogue.write_off(item, clerk, quantity_=2, reason="过期", key=f"expired-{i}")

    outcomes = race(app, THREADS, load, act)

    assert sum(o.error is None for o in outcomes) == 2
    for outcome in outcomes:
        if outcome.error is not None:
            assert isinstance(outcome.error, OutOfStock), outcome.message_en
            assert outcome.message_en == "Not enough “茶叶” in stock: 1 left, 2 wanted."
    assert stock_of(k, "tea") == 1
    assert_shop_clean(app)
