"""Yearly clearing: announced a month ahead, logged as transfers, honour untouched, runs once."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from pointsmart.extensions import db
from pointsmart.models import ClearingRun, Role, Transfer, TransferKind
from pointsmart.services import catalogue, clearing, ledger, redemptions
from pointsmart.services.errors import Forbidden, InvalidInput


@pytest.fixture
def w(make):
    village = make.village()
    group = make.group(village)
    rich, poor, spent = make.household(group), make.household(group), make.household(group)
    committee = make.staff(Role.COMMITTEE, village)
    make.funded(rich, 120, approver=committee)
    make.funded(spent, 30, approver=committee)
    shop = make.shop(village)
    clerk = make.staff(Role.CLERK, shop)
    item = catalogue.create_item(shop, catalogue.ItemData("毛巾", "日用品", 30), clerk)
    catalogue.receive(item, clerk, quantity_=5, key="clear-in")
    redemptions.checkout(shop=shop, household=spent, cart={item.id: 1}, clerk=clerk, key="c-1")
    db.session.commit()
    return village, rich, poor, spent, committee


def english(error) -> str:
    with force_locale("en"):
        return str(error.message)


def test_the_first_clearing_comes_only_after_a_months_notice(w):
    village, *_, committee = w
    clearing.set_date(village, committee, 12, 31, today=date(2026, 12, 10))
    # Set on 10 December: 31 December is too soon; the first clearing is next year's.
    assert clearing.next_date(village, date(2026, 12, 10)) == date(2027, 12, 31)
    assert clearing.due_date(village, date(2026, 12, 31)) is None
    clearing.set_date(village, committee, 1, 15, today=date(2026, 11, 1))
    assert clearing.next_date(village, date(2026, 11, 1)) == date(2027, 1, 15)
    assert clearing.due_date(village, date(2027, 1, 14)) is None
    assert clearing.due_date(village, date(2027, 1, 15)) == date(2027, 1, 15)


def test_villagers_are_told_the_date_and_amount_a_month_ahead(w):
    village, rich, poor, spent, committee = w
    clearing.set_date(village, committee, 3, 1, today=date(2026, 1, 1))
    assert clearing.notice(rich, date(2026, 1, 20)) is None  # more than 30 days ahead
    assert clearing.notice(rich, date(2026, 2, 1)) == clearing.Notice(date(2026, 3, 1), 120)
    assert clearing.notice(poor, date(2026, 2, 1)) == clearing.Notice(date(2026, 3, 1), 0)


def test_clearing_moves_spendable_points_and_leaves_honour(w):
    village, rich, poor, spent, committee = w
    clearing.set_date(village, committee, 1, 1, today=date(2020, 1, 1))
    record, created = clearing.run(village, date(2026, 1, 1))
    db.session.commit()
    assert created and (record.households, record.points) == (1, 120)
    assert ledger.balance_of(rich) == ledger.Balance(spendable=0, honour=120)
    assert ledger.balance_of(spent) == ledger.Balance(spendable=0, honour=30)
    transfer = db.session.scalar(sa.select(Transfer).where(Transfer.kind == TransferKind.CLEARING))
    assert (
        transfer.household_id == rich.id
        and transfer.amount == 120
        and transfer.signed_points == -120
    )
    assert "2026-01-01" in transfer.reason
    assert ledger.check() == ([], [])


def test_running_twice_clears_once(w, make):
    village, rich, *_ = w
    clearing.run(village, date(2026, 1, 1))
    db.session.commit()
    make.funded(rich, 40)  # earned after the clearing: must survive a second run
    db.session.commit()
    again, created = clearing.run(village, date(2026, 1, 1))
    db.session.commit()
    assert not created and again.points == 120
    assert ledger.balance_of(rich).spendable == 40
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ClearingRun)) == 1


def test_run_due_runs_each_due_village_once(w, app):
    village, rich, *_, committee = w
    clearing.set_date(village, committee, 6, 30, today=date(2026, 1, 1))
    db.session.commit()
    assert clearing.run_due(date(2026, 6, 29)) == []
    made = clearing.run_due(date(2026, 7, 2))  # the daily job missed a day: it catches up
    db.session.commit()
    assert [r.clearing_date for r in made] == [date(2026, 6, 30)]
    assert clearing.run_due(date(2026, 7, 3)) == []
    result = app.test_cli_runner().invoke(args=["run-clearing", "--today", "2026-07-04"])
    assert result.exit_code == 0 and "No clearing is due" in result.output


@pytest.mark.parametrize(
    "month, day, message",
    [
        (2, 29, "no such day"),
        (13, 1, "no such day"),
        (4, 31, "no such day"),
        ("x", 1, "month and a day"),
    ],
)
def test_bad_dates_are_refused(w, month, day, message):
    village, *_, committee = w
    with pytest.raises(InvalidInput) as info:
        clearing.set_date(village, committee, month, day)
    assert message in english(info.value)
    assert village.clearing_month is None


def test_only_the_committee_or_the_town_admin_sets_or_runs_it(w, make):
    village, *_ = w
    cadre = make.staff(Role.CADRE, village)
    with pytest.raises(Forbidden):
        clearing.set_date(village, cadre, 12, 31)
    with pytest.raises(Forbidden):
        clearing.run(village, date(2026, 1, 1), actor=cadre)
    admin = make.staff(Role.ADMIN, village.town)
    clearing.set_date(village, admin, 12, 31)
    assert (village.clearing_month, village.clearing_day) == (12, 31)


def test_a_clearing_cannot_run_before_its_date(w):
    village, *_ = w
    with pytest.raises(InvalidInput):
        clearing.run(village, date(2099, 1, 1))
