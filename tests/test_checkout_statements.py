"""What one checkout costs the database: a pinned number of statements, row locks taken last.

The counter's throughput (bench/checkout.py, issue 9) depends on how many round trips a
checkout makes and how long it holds row locks. These tests count the statements of one
checkout, in the service and through the whole confirm request, so that a lazy load or an
extra flush shows up here as a failure rather than later as a slower counter.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from pointsmart import create_app
from pointsmart.extensions import db
from pointsmart.models import (
    Card,
    Household,
    HouseholdMonth,
    Identification,
    Role,
    Shop,
    User,
    VillagerGroup,
)
from pointsmart.services import cards, catalogue, ledger, monthly, redemptions
from tests.conftest import app_config, login

#: One 2-line checkout in the service, objects loaded as the counter's confirm view loads them.
SERVICE_BEFORE = [
    "SELECT redemptions",  # the key seen before? (a replay answers before anything else)
    "SELECT shop_items",  # the cart's goods and prices
    "INSERT redemptions",  # under its unique key (ON CONFLICT): a concurrent twin waits here
    "SELECT accounts",  # the household's and the shop's, in one read
]
#: Then one flush of every other row of the checkout, before any row lock (in whatever order
#: the unit of work sorts them); on PostgreSQL the rows of a table go in one INSERT.
SERVICE_ROWS = {
    "INSERT transfers": 1,
    "INSERT ledger_entries": 2,
    "INSERT redemption_lines": 2,
    "INSERT stock_movements": 2,
    "INSERT audit_log": 1,
}
#: The row locks, last: items in id order, then accounts in id order; then the redemption gets
#: its transfer and the balance after (from the UPDATE … RETURNING of the household's account),
#: by an UPDATE of its own rather than a flush.
SERVICE_AFTER = [
    "UPDATE shop_items",
    "UPDATE shop_items",
    "UPDATE accounts",
    "UPDATE accounts",
    "UPDATE redemptions",
]
SERVICE_FLUSHES = 1

#: The whole confirm request around it: the login session with its user and grants, the shop,
#: the household with its group and village, the scanned card, each in one query.
REQUEST_BEFORE = [
    "SELECT login_sessions",
    "SELECT shops",
    "SELECT households",
    "SELECT household_cards",
]
#: After the commit nothing is read back: not by the view, nor by the security headers (they
#: ask ``is_anonymous``, which, unlike ``is_authenticated``, does not reload the expired user).
REQUEST_AFTER: list[str] = []


def expected_rows(dialect: str) -> list[str]:
    """Return the INSERTs of the checkout's flush, sorted: one per table on PostgreSQL (its
    multi-row INSERT … RETURNING), one per row on SQLite."""
    return sorted(
        shape
        for shape, rows in SERVICE_ROWS.items()
        for _ in range(1 if dialect == "postgresql" else rows)
    )


def assert_checkout_statements(statements: list[str], dialect: str, before=(), after=()) -> None:
    """The statements are ``before``, the checkout's in the pinned order, then ``after``."""
    shapes = [shape(s) for s in statements]
    head = [*before, *SERVICE_BEFORE]
    rows = expected_rows(dialect)
    assert shapes[: len(head)] == head, listing(statements)
    assert sorted(shapes[len(head) : len(head) + len(rows)]) == rows, listing(statements)
    assert shapes[len(head) + len(rows) :] == [*SERVICE_AFTER, *after], listing(statements)


@pytest.fixture
def w(make):
    village = make.village()
    household = make.household(make.group(village))
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    make.funded(household, 100)
    rice = catalogue.create_item(shop, catalogue.ItemData("大米", "粮油", 10), clerk)
    soap = catalogue.create_item(shop, catalogue.ItemData("肥皂", "日用品", 3), clerk)
    catalogue.receive(rice, clerk, quantity_=10, key="rice-in")
    catalogue.receive(soap, clerk, quantity_=10, key="soap-in")
    card = cards.current_card(household)
    ids = SimpleNamespace(
        household=household.id,
        shop=shop.id,
        clerk=clerk.id,
        card=card.id,
        token=card.token,
        rice=rice.id,
        soap=soap.id,
        clerk_user=clerk,
    )
    db.session.commit()
    return ids


def shape(statement: str) -> str:
    """Return a statement's verb and table, e.g. "INSERT redemptions" or "SAVEPOINT"."""
    text = " ".join(statement.split())
    for pattern in (
        r"^(SELECT) .*? FROM (\w+)",
        r"^(INSERT) INTO (\w+)",
        r"^(UPDATE) (\w+)",
        r"^(DELETE) FROM (\w+)",
    ):
        match = re.match(pattern, text)
        if match:
            return " ".join(match.groups())
    return re.sub(r" sa_savepoint_\d+$", "", text)


@contextmanager
def recorded(engine):
    """Record the statements sent on ``engine`` (not BEGIN: SQLite sends it, psycopg does not)
    and the ORM flushes; yield (statements, flushes)."""
    statements: list[str] = []
    flushes: list[int] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith("BEGIN"):
            statements.append(statement)

    def on_flush(session, context, instances):
        flushes.append(1)

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    sa.event.listen(Session, "before_flush", on_flush)
    try:
        yield statements, flushes
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
        sa.event.remove(Session, "before_flush", on_flush)


def listing(statements: list[str]) -> str:
    return "\n".join(f"{i + 1:3}. {' '.join(s.split())[:140]}" for i, s in enumerate(statements))


def loaded(w) -> tuple[User, Shop, Household, Card]:
    """Load in a fresh session what the confirm view has in hand when it calls the service:
    the user loader's user with its grants, the shop, the household with its group and
    village (household_or_404), the card from the session."""
    db.session.remove()
    return (
        db.session.get(User, w.clerk, options=[joinedload(User.grants)]),
        db.session.get(Shop, w.shop),
        db.session.get(
            Household,
            w.household,
            options=[joinedload(Household.group).joinedload(VillagerGroup.village)],
        ),
        db.session.get(Card, w.card),
    )


def months() -> list:
    return db.session.execute(
        sa.select(HouseholdMonth.household_id, HouseholdMonth.month, HouseholdMonth.points)
    ).all()


def test_a_checkout_sends_a_fixed_list_of_statements_and_locks_rows_last(app, w):
    before = months()
    clerk, shop, household, card = loaded(w)

    with recorded(db.engine) as (statements, flushes):
        redemption, created = redemptions.checkout(
            shop=shop,
            household=household,
            cart={w.soap: 2, w.rice: 1},
            clerk=clerk,
            key="k-statements",
            identified_by=Identification.QR,
            card=card,
            expected_total=16,
        )
        assert (redemption.total_points, redemption.balance_after) == (16, 84)
        # What the API answers with, read back without a query.
        assert [line.quantity for line in redemption.lines] == [1, 2]
        assert all(line.id for line in redemption.lines)
        assert redemption.transfer.amount == 16
        assert redemption.voided_points == 0
        db.session.commit()

    assert created
    assert_checkout_statements(statements, db.engine.dialect.name)
    assert len(flushes) == SERVICE_FLUSHES
    # The floor is checked inside the household's UPDATE; the shop's has none.
    floors = [">=" in s for s in statements if shape(s) == "UPDATE accounts"]
    assert sorted(floors) == [False, True], listing(statements)
    db.session.expire_all()
    assert ledger.balance_of(household).spendable == 84
    assert ledger.check() == ([], [])
    # Spending is no monthly honour: the households' months are as they were, and agree.
    assert months() == before
    assert monthly.check() == []


def test_a_replayed_checkout_reads_its_redemption_and_writes_nothing(app, w):
    def confirm(clerk, shop, household, card):
        return redemptions.checkout(
            shop=shop, household=household, cart={w.soap: 1}, clerk=clerk, key="twice"
        )

    first, _ = confirm(*loaded(w))
    first_id = first.id
    db.session.commit()
    objects = loaded(w)

    with recorded(db.engine) as (statements, flushes):
        again, created = confirm(*objects)

    assert (again.id, created) == (first_id, False)
    assert [shape(s) for s in statements] == ["SELECT redemptions"], listing(statements)
    assert not flushes


@pytest.fixture
def served(app):
    """The app as a worker runs it: each request in its own app context and session."""
    served = create_app(app_config(app.config["SQLALCHEMY_DATABASE_URI"]))
    yield served
    with served.app_context():
        db.engine.dispose()


def test_the_confirm_request_adds_only_the_loads_of_what_it_names(app, served, w):
    client = served.test_client()
    login(client, w.clerk_user)
    db.session.rollback()  # login reads its token back: SQLite's write lock goes with this
    # The card scanned first: the confirm request finds it in the session.
    assert client.post(f"/clerk/shops/{w.shop}/counter", data={"code": w.token}).status_code == 302
    form = {f"qty-{w.soap}": "2", f"qty-{w.rice}": "1", "key": "k" * 32, "total": "16"}
    url = f"/clerk/shops/{w.shop}/households/{w.household}/checkout"
    with served.app_context():
        engine = db.engine

    with recorded(engine) as (statements, flushes):
        response = client.post(url, data=form)

    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    assert_checkout_statements(statements, engine.dialect.name, REQUEST_BEFORE, REQUEST_AFTER)
    assert len(flushes) == SERVICE_FLUSHES
    redemption = redemptions.find("k" * 32)
    assert response.location.endswith(f"/clerk/redemptions/{redemption.id}")
    assert redemption.identified_by is Identification.QR
