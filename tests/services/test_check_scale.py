"""The checks behind check-ledger at county scale: the database picks out what disagrees, and the
monthly figures are gone through a chunk of households at a time. Small chunks here, so that a
mismatch in a later chunk, or in the last, open-ended one, must still be found."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pointsmart.extensions import db
from pointsmart.models import (
    Account,
    AccountKind,
    HouseholdMonth,
    MovementKind,
    RedemptionLine,
    Role,
    StockMovement,
    Transfer,
)
from pointsmart.services import catalogue, ledger, monthly, rankings, redemptions


@pytest.fixture
def households(make):
    """Five households of one group, awarded 10, 20, … 50 this month; committed."""
    group = make.group(make.village(make.town()))
    found = [make.household(group) for _ in range(5)]
    for n, household in enumerate(found, start=1):
        make.funded(household, 10 * n)
    db.session.commit()
    assert monthly.check() == []
    return found


def figures(points: int) -> dict[str, int]:
    return {"points": points, "awarded": points, "deducted": 0, "awards": 1, "deductions": 0}


def months() -> list[tuple]:
    columns = [c for c in HouseholdMonth.__table__.c if c.name != "id"]
    return db.session.execute(
        sa.select(*columns).order_by(HouseholdMonth.household_id, HouseholdMonth.month)
    ).all()


@pytest.mark.parametrize("chunk", [1, 2, 5_000])
def test_check_finds_wrong_months_in_later_chunks(households, monkeypatch, chunk):
    monkeypatch.setattr(monthly, "CHUNK_HOUSEHOLDS", chunk)
    third, last = households[2], households[4]
    db.session.execute(
        sa.update(HouseholdMonth)
        .where(HouseholdMonth.household_id == third.id)
        .values(points=HouseholdMonth.points + 1)
    )
    db.session.execute(sa.delete(HouseholdMonth).where(HouseholdMonth.household_id == last.id))
    month = rankings.this_month()

    assert monthly.check() == [
        f"household {third.id} month {month:%Y-%m}: stored {figures(30) | {'points': 31}}, "
        f"from transfers {figures(30)}",
        f"household {last.id} month {month:%Y-%m}: stored None, from transfers {figures(50)}",
    ]


def test_check_goes_through_every_household_in_chunks(households, monkeypatch):
    monkeypatch.setattr(monthly, "CHUNK_HOUSEHOLDS", 2)
    bounds = list(monthly._household_chunks())
    ids = [h.id for h in households]
    # Two by two, the last chunk open-ended: nothing beyond the last household escapes it.
    assert bounds == [(None, ids[1]), (ids[1], ids[3]), (ids[3], None)]


def test_rebuild_in_chunks_writes_every_household_again(households, monkeypatch):
    monkeypatch.setattr(monthly, "CHUNK_HOUSEHOLDS", 2)
    before = months()
    db.session.execute(sa.update(HouseholdMonth).values(points=0, group_name="9组"))
    db.session.execute(
        sa.delete(HouseholdMonth).where(HouseholdMonth.household_id == households[-1].id)
    )
    assert len(monthly.check()) == 5 + 4  # the figures of all five, the copies of four

    assert monthly.rebuild() == 5
    assert months() == before
    assert monthly.check() == []


def account(household, kind: AccountKind) -> Account:
    return db.session.scalar(
        sa.select(Account).where(Account.household_id == household.id, Account.kind == kind)
    )


def test_ledger_check_returns_only_the_accounts_that_differ(households, make):
    idle = make.household(households[0].group)  # its accounts have no entries at all
    db.session.commit()
    spent = account(households[3], AccountKind.HOUSEHOLD_SPENDABLE)
    never = account(idle, AccountKind.HOUSEHOLD_HONOUR)
    db.session.execute(
        sa.update(Account)
        .where(Account.id.in_([spent.id, never.id]))
        .values(balance=Account.balance + 5)
    )
    db.session.commit()

    assert ledger.check() == (
        [  # by account id: the idle household's accounts came last
            ledger.Mismatch(
                spent.id,
                f"household {households[3].id} {households[3].name} (household_spendable)",
                45,
                40,
            ),
            ledger.Mismatch(never.id, f"household {idle.id} {idle.name} (household_honour)", 5, 0),
        ],
        [],
    )


def test_check_redemptions_returns_only_the_redemptions_that_differ(households, make):
    village = households[0].group.village
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    rice = catalogue.create_item(shop, catalogue.ItemData("大米", "粮油", 10), clerk)
    catalogue.receive(rice, clerk, quantity_=10, key="scale-stock")
    sales = [
        redemptions.checkout(
            shop=shop,
            household=household,
            cart={rice.id: 1},
            clerk=clerk,
            key=f"scale-sale-{household.id}",
        )[0]
        for household in households[1:] + households[:1]
    ]
    first, second, third, fourth, fifth = sales
    redemptions.void(first, clerk, reason="拿错了", key="scale-void-1", quantities=None)
    record, _ = redemptions.void(fifth, clerk, reason="拿错了", key="scale-void-5", quantities=None)
    db.session.commit()
    assert redemptions.check_redemptions() == []
    db.session.execute(
        sa.delete(StockMovement).where(
            StockMovement.redemption_id == first.id, StockMovement.kind == MovementKind.RETURN
        )
    )
    db.session.execute(
        sa.update(RedemptionLine)
        .where(RedemptionLine.redemption_id == second.id)
        .values(unit_points=11)
    )
    db.session.execute(
        sa.update(RedemptionLine)
        .where(RedemptionLine.redemption_id == third.id)
        .values(voided_quantity=1)
    )
    db.session.execute(
        sa.update(Transfer).where(Transfer.id == fourth.transfer_id).values(amount=11)
    )
    db.session.execute(
        sa.update(Transfer).where(Transfer.id == record.transfer_id).values(amount=9)
    )

    assert redemptions.check_redemptions() == [
        f"redemption {first.id}: 1 units voided, None returned",
        f"redemption {second.id}: total 10, lines 11, transfer 10",
        f"redemption {third.id}: 1 units voided, None returned",
        f"redemption {third.id}: 10 points voided, None refunded of 10",
        f"redemption {fourth.id}: total 10, lines 10, transfer 11",
        f"redemption {fifth.id}: 10 points voided, 9 refunded of 10",
        f"void {record.id}: 10 points, refund transfer 9",
    ]
